"""Shared parts of the launch_testing tests (imported only where launch_testing exists).

The test modules put this folder on ``sys.path`` themselves, so ``launch_test test/test_seg_launch.py``
finds this module as well as pytest does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import launch_testing.actions
import numpy as np
import rclpy
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.events.process import ProcessExited
from launch.launch_description_sources import PythonLaunchDescriptionSource
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image

REPO = Path(__file__).resolve().parent.parent
IMAGE_TOPIC = "/launch_camera/image"


def perception_launch_description(launch_file: str) -> LaunchDescription:
    """The package's launch file with a test namespace and camera topic, then ReadyToTest."""
    namespace = "launch_seg" if launch_file.startswith("seg") else "launch_det"
    return LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(REPO / "launch" / launch_file)),
            launch_arguments={
                "image_topic": IMAGE_TOPIC,
                "namespace": namespace,
                "params_file": str(REPO / "config" / "params" / (
                    "segmentation.yaml" if launch_file.startswith("seg") else "detection.yaml")),
            }.items(),
        ),
        launch_testing.actions.ReadyToTest(),
    ])


def exited_processes(proc_info: Any) -> list[str]:
    """'name (exit code N)' for every launched process that has exited (launch_testing's ``proc_info``)."""
    return [
        f"{info.process_name} (exit code {info.returncode})" for info in proc_info if isinstance(info, ProcessExited)
    ]


def camera_image_answered(output_topic: str, message_type: type, proc_info: Any, timeout: float = 60.0) -> Any:
    """Publish motorcycle_left.png (reliable) until ``output_topic`` delivers a message; return it.

    Fails at once, naming the process, when a launched process exits meanwhile."""
    # No rclpy signal handlers: their C++ thread would abort the process (exit 134) if launch_test exits
    # while this test thread still runs, e.g. after the node died.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("launch_test_camera")
    try:
        received: list[Any] = []
        node.create_subscription(message_type, output_topic, received.append, 10)
        camera = node.create_publisher(Image, IMAGE_TOPIC, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        bgr = cv2.imread(str(REPO / "test" / "fixtures" / "images" / "motorcycle_left.png"))
        # Half size: this camera runs with Fast DDS's defaults, whose shared memory loses best-effort
        # samples above ~512 KB (the sender's segment decides; docs/nodes.md, QoS).
        rgb = np.ascontiguousarray(cv2.resize(bgr, None, fx=0.5, fy=0.5)[:, :, ::-1])
        image = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3,
                      data=rgb.tobytes())
        image.header.frame_id = "launch_camera"
        deadline = time.monotonic() + timeout
        while not received and time.monotonic() < deadline:
            exited = exited_processes(proc_info)
            assert not exited, f"launched node exited before answering: {', '.join(exited)}"
            camera.publish(image)
            rclpy.spin_once(node, timeout_sec=0.5)
        assert received, f"nothing on {output_topic} within {timeout} s"
        return received[0]
    finally:
        node.destroy_node()
        rclpy.shutdown()
