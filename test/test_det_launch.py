"""launch_testing test: det.launch.py starts the detection node, which answers a camera image.

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

from trt_perception.spec import load_model_spec  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():  # type: ignore[no-untyped-def]
    """det.launch.py in namespace /launch_det on /launch_camera/image, plus ReadyToTest."""
    return perception_launch_description("det.launch.py")


class TestDetectionLaunch(unittest.TestCase):
    def test_detections_published_for_camera_image(self, proc_info) -> None:  # type: ignore[no-untyped-def]
        from vision_msgs.msg import Detection2DArray

        message = camera_image_answered("/launch_det/detection/detections", Detection2DArray, proc_info)
        self.assertEqual(message.header.frame_id, "launch_camera")
        names = load_model_spec("centernet_mobilenetv3_coco").labels or ()
        # class_id is the class index (names through ~/label_info)
        self.assertIn("motorcycle", [names[int(d.results[0].hypothesis.class_id)] for d in message.detections])


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_node_exits_cleanly(self, proc_info) -> None:  # type: ignore[no-untyped-def]
        launch_testing.asserts.assertExitCodes(proc_info)
