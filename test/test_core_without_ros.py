"""The core (everything outside ``trt_perception.ros``) imports no ROS; ``bag-eval --live`` says what it lacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROS_MODULES = ("rclpy", "sensor_msgs", "vision_msgs", "std_msgs", "builtin_interfaces")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_core_modules_import_no_ros() -> None:
    completed = run_python(
        "import importlib, pkgutil, sys, trt_perception\n"
        "names = [m.name for m in pkgutil.walk_packages(trt_perception.__path__, 'trt_perception.')"
        " if not m.name.startswith('trt_perception.ros')]\n"
        "for name in names: importlib.import_module(name)\n"
        f"print(len(names), sorted(m for m in sys.modules if m.split('.')[0] in {ROS_MODULES!r}))\n"
    )
    assert completed.returncode == 0, completed.stderr
    count, loaded = completed.stdout.split(" ", 1)
    assert int(count) > 30
    assert loaded.strip() == "[]", f"core modules imported ROS: {loaded}"


def test_live_bag_eval_without_ros_names_what_is_missing(tmp_path: Path) -> None:
    completed = run_python(
        "import sys\n"
        f"for name in {ROS_MODULES!r}: sys.modules[name] = None\n"
        "from trt_perception.cli.main import main\n"
        f"sys.exit(main(['bag-eval', '--live', '--bag', {str(tmp_path / 'bag')!r}, '--model-spec', 'selfie_segmentation',"
        f" '--image-topic', '/cam', '--out', {str(tmp_path / 'out')!r}]))\n"
    )
    assert completed.returncode == 1
    assert "--live needs ROS 2 (rclpy): import of rclpy halted" in completed.stderr
