"""Shared parts of the launch_testing tests (imported only where launch_testing exists).

The test modules put this folder on ``sys.path`` themselves, so ``launch_test test/test_seg_launch.py``
finds this module as well as pytest does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import launch_testing.actions
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.events.process import ProcessExited
from launch.launch_description_sources import PythonLaunchDescriptionSource
from sensor_msgs.msg import Image

from node_harness import RosClient, camera_frame, image_message, qos, read_rgb

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
    """Publish motorcycle_left.png (half size, reliable) until ``output_topic`` delivers a message; return it.

    Fails at once, naming the process, when a launched process exits meanwhile."""
    ros = RosClient("launch_test_camera")
    try:
        answers = ros.record(message_type, output_topic, qos(reliable=True))
        camera = ros.node.create_publisher(Image, IMAGE_TOPIC, qos(reliable=True, depth=1))
        height, width = read_rgb("motorcycle_left.png").shape[:2]
        # Half size: this camera runs with Fast DDS's defaults, whose shared memory loses best-effort
        # samples above ~512 KB (the sender's segment decides; docs/nodes.md, QoS).
        image = image_message(camera_frame("motorcycle_left.png", height // 2, width // 2), "rgb8", "launch_camera", (0, 0))
        deadline = time.monotonic() + timeout
        while not answers.messages and time.monotonic() < deadline:
            exited = exited_processes(proc_info)
            assert not exited, f"launched node exited before answering: {', '.join(exited)}"
            camera.publish(image)
            time.sleep(0.5)
        assert answers.messages, f"nothing on {output_topic} within {timeout} s"
        return answers.messages[0]
    finally:
        ros.close()
