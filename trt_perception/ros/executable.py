"""``python -m trt_perception.ros.executable <node> [ROS arguments]``: what the installed node executables run.

Installs the stop-signal handlers before importing rclpy and the model runtime, so that SIGINT/SIGTERM
while the node is still importing ends it with exit 0 as well.
"""

from __future__ import annotations

import importlib
import sys

from trt_perception.ros.stop_signals import StopRequested, install_stop_signals

# executable name -> module whose main() runs the node
NODE_MODULES = {
    "segmentation_node": "trt_perception.ros.segmentation_node",
    "detection_node": "trt_perception.ros.detection_node",
}


def main() -> int:
    """Run the node named by the first argument with the remaining arguments; the exit code."""
    install_stop_signals()
    try:
        if len(sys.argv) < 2 or sys.argv[1] not in NODE_MODULES:
            print(f"usage: python -m trt_perception.ros.executable {{{','.join(NODE_MODULES)}}} [--ros-args ...]",
                  file=sys.stderr)
            return 2
        name = sys.argv[1]
        sys.argv = [name, *sys.argv[2:]]
        return int(importlib.import_module(NODE_MODULES[name]).main())
    except StopRequested:
        return 0


if __name__ == "__main__":
    sys.exit(main())
