"""The package in a colcon workspace, as a robot builds it: `colcon build --symlink-install` writes nothing into
the source tree and installs the node executables, and `colcon test` runs pytest (not unittest's 0 tests).

Needs colcon (colcon-core, colcon-ros: `pip install colcon-core colcon-ros`); skipped without it. README,
"Using it on a robot", says which setuptools `--symlink-install` needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def colcon(workspace: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run colcon with this python in ``workspace``."""
    command = [sys.executable, "-c", "import sys; from colcon_core.command import main; sys.exit(main())", *arguments]
    return subprocess.run(command, cwd=workspace, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, COLCON_HOME=str(workspace / ".colcon")))


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    return [name for name in listed.stdout.splitlines() if (REPO / name).exists() or (REPO / name).is_symlink()]


def test_colcon_symlink_build_leaves_the_source_alone_and_colcon_test_runs_pytest(tmp_path: Path) -> None:
    # skipped inside the test: a module-level skip stops launch_testing's pytest plugin collecting test/
    pytest.importorskip("colcon_core", reason="colcon is not installed (pip install colcon-core colcon-ros)")
    pytest.importorskip("colcon_ros", reason="colcon-ros is not installed (pip install colcon-ros)")
    source = tmp_path / "src" / "trt_perception"
    for name in tracked_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_symlink():
            target.symlink_to(os.readlink(REPO / name))
        else:
            shutil.copy2(REPO / name, target)
    before = sorted(str(p.relative_to(source)) for p in source.rglob("*"))

    built = colcon(tmp_path, "build", "--symlink-install")
    assert built.returncode == 0, built.stdout + built.stderr
    assert sorted(str(p.relative_to(source)) for p in source.rglob("*")) == before
    install = tmp_path / "install" / "trt_perception"
    for node in ("segmentation_node", "detection_node"):
        assert os.access(install / "lib" / "trt_perception" / node, os.X_OK)
    assert not (tmp_path / "build" / "vision_msgs").exists()  # interfaces/ is for setup_env.sh only

    # `ros2 run` runs lib/trt_perception/<node> directly; from a PATH without the Python that colcon ran with
    # (a venv that is not activated, a supervisor's PATH) the node still starts with that Python, and stops
    # with its FATAL line about the missing spec (not a ModuleNotFoundError from another python3).
    site_packages = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    missing_spec = tmp_path / "missing_spec.yaml"
    node = install / "lib" / "trt_perception" / "segmentation_node"
    started = subprocess.run(
        [str(node), "--ros-args", "-p", f"model_spec:={missing_spec}"],
        env=dict(os.environ, PATH="/usr/bin:/bin",
                 PYTHONPATH=os.pathsep.join(filter(None, [str(site_packages), os.environ.get("PYTHONPATH")]))),
        capture_output=True, text=True, timeout=60)
    output = started.stdout + started.stderr
    assert started.returncode == 1 and f"model spec file not found: {missing_spec}" in output, output
    assert "Traceback" not in output

    tested = colcon(tmp_path, "test", "--pytest-args", "-k", "test_quote_limited_cuts_long_text")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    report = (tmp_path / "build" / "trt_perception" / "pytest.xml").read_text()
    assert 'tests="' in report and 'name="test_quote_limited_cuts_long_text_and_says_how_much"' in report
