"""launch_testing test: seg.launch.py starts the segmentation node, which answers a camera image.

Runs under ``launch_test`` / ``colcon test`` on a ROS 2 install. Plain pytest without
launch_testing (the PyPI wheels have no launch packages) skips it with the reason below.
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed (no launch packages on PyPI); run on a ROS 2 install"
)
launch_ros = pytest.importorskip("launch_ros", reason="launch_ros is not installed; run on a ROS 2 install")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for launch_test, which does not add it
from launch_test_support import camera_image_answered, perception_launch_description  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():  # type: ignore[no-untyped-def]
    """seg.launch.py in namespace /launch_seg on /launch_camera/image, plus ReadyToTest."""
    return perception_launch_description("seg.launch.py")


class TestSegmentationLaunch(unittest.TestCase):
    def test_labels_published_for_camera_image(self, proc_info) -> None:  # type: ignore[no-untyped-def]
        from sensor_msgs.msg import Image

        message = camera_image_answered("/launch_seg/segmentation/labels", Image, proc_info)
        self.assertEqual(message.encoding, "mono8")
        self.assertEqual(message.header.frame_id, "launch_camera")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_node_exits_cleanly(self, proc_info) -> None:  # type: ignore[no-untyped-def]
        launch_testing.asserts.assertExitCodes(proc_info)
