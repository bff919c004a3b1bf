"""A separate ROS 2 process for test_dds_exchange: publishes the messages described in a JSON file.

Usage: python dds_peer.py MESSAGES_JSON IMAGE_DATA_FILE
Publishes a sensor_msgs/Image on `peer/image` and a vision_msgs/Detection2DArray on
`peer/detections` (reliable QoS) ten times a second until SIGTERM/SIGINT, then exits 0.

rclpy's own signal handlers are off: with them, a signal that lands between two waits shuts the
context down under the executor, and the next wait fails with RCLError instead of ending spin.
The handler here only sets a flag that the spin loop checks.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import rclpy
from geometry_msgs.msg import PoseWithCovariance
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesis, ObjectHypothesisWithPose


def make_header(spec: dict[str, Any]) -> Header:
    header = Header(frame_id=spec["frame_id"])
    header.stamp.sec = spec["sec"]
    header.stamp.nanosec = spec["nanosec"]
    return header


def make_image(spec: dict[str, Any], data: bytes) -> Image:
    return Image(
        header=make_header(spec["header"]),
        height=spec["height"],
        width=spec["width"],
        encoding=spec["encoding"],
        is_bigendian=spec["is_bigendian"],
        step=spec["step"],
        data=data,
    )


def make_detections(spec: dict[str, Any]) -> Detection2DArray:
    message = Detection2DArray(header=make_header(spec["header"]))
    for det in spec["detections"]:
        detection = Detection2D(header=make_header(spec["header"]), id=det["id"])
        detection.bbox.center.position.x = det["center_x"]
        detection.bbox.center.position.y = det["center_y"]
        detection.bbox.center.theta = det["theta"]
        detection.bbox.size_x = det["size_x"]
        detection.bbox.size_y = det["size_y"]
        for hyp in det["results"]:
            pose = PoseWithCovariance(covariance=hyp["covariance"])
            pose.pose.position.x = hyp["position_x"]
            detection.results.append(
                ObjectHypothesisWithPose(
                    hypothesis=ObjectHypothesis(class_id=hyp["class_id"], score=hyp["score"]), pose=pose
                )
            )
        message.detections.append(detection)
    return message


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    image = make_image(spec["image"], Path(sys.argv[2]).read_bytes())
    detections = make_detections(spec["detections"])
    stop_requested = False

    def request_stop(number: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, request_stop)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("dds_peer")
    image_pub = node.create_publisher(Image, "peer/image", 10)
    detections_pub = node.create_publisher(Detection2DArray, "peer/detections", 10)

    def publish() -> None:
        image_pub.publish(image)
        detections_pub.publish(detections)

    node.create_timer(0.1, publish)
    try:
        while not stop_requested:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
