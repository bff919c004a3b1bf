"""``python -m trt_perception.ros.executable <node> [ROS arguments]``: what the installed node executables run
(lib/trt_perception/<node>), and ``console_main`` the same for the console scripts bin/<node>.

Installs the stop-signal handlers before importing rclpy and the model runtime, so that SIGINT/SIGTERM
while the node is still importing ends it with exit 0 as well.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from trt_perception.ros.stop_signals import StopRequested, install_stop_signals

# executable name -> "module:function" that runs the node (setup.py installs one executable per name)
NODE_ENTRY_POINTS = {
    "segmentation_node": "trt_perception.ros.segmentation_node:main",
    "detection_node": "trt_perception.ros.detection_node:main",
    "segmentation_lifecycle_node": "trt_perception.ros.lifecycle_node:segmentation_main",
    "detection_lifecycle_node": "trt_perception.ros.lifecycle_node:detection_main",
}


def main() -> int:
    """Run the node named by the first argument with the remaining arguments; the exit code."""
    install_stop_signals()
    try:
        if len(sys.argv) < 2 or sys.argv[1] not in NODE_ENTRY_POINTS:
            print(f"usage: python -m trt_perception.ros.executable {{{','.join(NODE_ENTRY_POINTS)}}} [--ros-args ...]",
                  file=sys.stderr)
            return 2
        name = sys.argv[1]
        sys.argv = [name, *sys.argv[2:]]
        module, function = NODE_ENTRY_POINTS[name].split(":")
        return int(getattr(importlib.import_module(module), function)())
    except StopRequested:
        return 0


def console_main() -> int:
    """Entry point of the node console scripts (bin/<node>): ``main`` for the node the script is named after."""
    sys.argv = [sys.argv[0], Path(sys.argv[0]).stem, *sys.argv[1:]]
    return main()


if __name__ == "__main__":
    sys.exit(main())
