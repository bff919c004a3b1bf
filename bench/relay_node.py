"""A plain relay node: subscribes ``sensor_msgs/Image`` on ``image`` and publishes it unchanged on ``~/image``.

    source scripts/ros_env.sh && python bench/relay_node.py --ros-args -r __node:=relay \
        [-p input_reliability:=best_effort] [-p output_reliability:=reliable] [-p depth:=5] [-p raw:=true]

The baseline of bench/bench_transport_e2e.py: one node hop that does no work. With ``raw`` (default)
the serialized bytes received are published as they are (no rclpy message is built); with
``raw:=false`` the message goes through rclpy's deserialization and serialization.
Parameter names and QoS match the perception nodes' (``volatile_qos``).
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.node import Node
from sensor_msgs.msg import Image

from trt_perception.ros.perception_node import run_node, volatile_qos


class RelayNode(Node):
    """Republishes every image it receives, unchanged."""

    def __init__(self) -> None:
        super().__init__("relay")
        input_reliability = self.declare_parameter("input_reliability", "best_effort").value
        output_reliability = self.declare_parameter("output_reliability", "reliable").value
        depth = self.declare_parameter("depth", 5).value
        raw = self.declare_parameter("raw", True).value
        self._publisher = self.create_publisher(Image, "~/image", volatile_qos(output_reliability, depth))
        self.create_subscription(Image, "image", self._relay, volatile_qos(input_reliability, depth), raw=raw)

    def _relay(self, message: Any) -> None:
        self._publisher.publish(message)


def main() -> int:
    """Run the relay until SIGINT/SIGTERM."""
    return run_node(RelayNode, "relay", sys.argv)  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
