"""The launch files under the real launch API: a node that cannot start fails the launch (exit code 1
with the node's reason), and the node_name / executable arguments of seg.launch.py are honoured.

Needs the ROS 2 launch packages (launch, launch_ros), which PyPI does not have: skipped without them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

launch = pytest.importorskip("launch", reason="launch is not installed (no launch packages on PyPI); run on a ROS 2 install")
pytest.importorskip("launch_ros", reason="launch_ros is not installed; run on a ROS 2 install")

from node_harness import isolated_ros_environment  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# Runs one launch file in a process of its own (launch's logging and signal handlers stay out of pytest).
LAUNCH_SCRIPT = """
import sys
import launch
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

arguments = dict(argument.split(":=", 1) for argument in sys.argv[2:])
service = launch.LaunchService()
service.include_launch_description(launch.LaunchDescription([
    IncludeLaunchDescription(PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=arguments.items()),
]))
sys.exit(service.run())
"""


LAUNCH_TIMEOUT_S = 120


def run_launch(launch_file: str, arguments: dict[str, str]) -> tuple[int, str]:
    """Run ``launch/<launch_file>`` with ``arguments`` until it ends: the exit code and the output. A launch
    still running after LAUNCH_TIMEOUT_S is killed with the node it started (its process group), and fails."""
    command = [sys.executable, "-c", LAUNCH_SCRIPT, str(REPO / "launch" / launch_file)]
    process = subprocess.Popen(
        command + [f"{name}:={value}" for name, value in arguments.items()], env=isolated_ros_environment(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the launch still ran after {LAUNCH_TIMEOUT_S} s:\n{output}")
    return process.returncode, output


@pytest.mark.parametrize("launch_file", ["seg.launch.py", "det.launch.py", "multi_camera.launch.py"])
def test_missing_model_spec_makes_the_launch_fail_with_the_reason(launch_file: str) -> None:
    code, output = run_launch(launch_file, {"model_spec": "/nonexistent/spec.yaml", "namespace": "launch_exit"})
    assert code == 1, output
    assert "cannot start: model spec file not found: /nonexistent/spec.yaml" in output
    assert "exited with code 1" in output


def test_node_name_and_executable_arguments_are_honoured() -> None:
    # seg.launch.py with the detection executable and another name; the missing spec ends it at start-up
    arguments = {"executable": "detection_node", "node_name": "renamed", "model_spec": "/nonexistent/spec.yaml"}
    code, output = run_launch("seg.launch.py", arguments)
    assert code == 1, output
    assert "detection_node-1 exited with code 1" in output
    assert "__node:=renamed" in output
    # the parameters file follows the executable, not the node's name (there is no config/params/renamed.yaml)
    assert "config/params/detection.yaml" in output and "renamed.yaml" not in output


def test_multi_camera_launch_remaps_each_camera_and_passes_the_list() -> None:
    arguments = {"cameras": "front,rear", "image_topic_format": "/rig/{camera}/image", "model_spec": "/nonexistent.yaml"}
    code, output = run_launch("multi_camera.launch.py", arguments)
    assert code == 1, output
    assert "front/image:=/rig/front/image" in output and "rear/image:=/rig/rear/image" in output


@pytest.mark.parametrize("topic_format", ["/rig/{cam}/image", "/rig/image"])
def test_a_camera_topic_format_without_the_camera_is_refused_with_the_reason(topic_format: str) -> None:
    # "{cam}" ended the launch with only "Caught exception in launch ...: 'cam'" (a KeyError); a format
    # without "{camera}" put every camera on the one topic without a word.
    code, output = run_launch("multi_camera.launch.py", {"cameras": "front,rear", "image_topic_format": topic_format})
    assert code == 1, output
    assert f"image_topic_format {topic_format!r} must contain {{camera}}" in output
    assert "process started" not in output


def test_one_named_camera_may_read_a_topic_without_its_name() -> None:
    # one camera of a multi-camera node on a driver's fixed topic: nothing to collide with
    arguments = {"cameras": "front", "image_topic_format": "/camera/color/image_raw", "model_spec": "/nonexistent.yaml"}
    code, output = run_launch("multi_camera.launch.py", arguments)
    assert code == 1, output  # the missing spec ends it, after the remapping
    assert "front/image:=/camera/color/image_raw" in output and "must contain" not in output


def test_a_params_file_that_is_not_there_fails_the_launch() -> None:
    # launch_ros only warned "Parameter file path is not a file" and started the node with the built-in
    # defaults, i.e. maybe another model than the file names.
    for launch_file in ("seg.launch.py", "det.launch.py"):
        code, output = run_launch(launch_file, {"params_file": "/nonexistent/params.yaml"})
        assert code == 1, output
        assert "params_file '/nonexistent/params.yaml' is not a file" in output
        assert "process started" not in output
