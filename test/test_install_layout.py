"""The installed package is laid out the way ROS 2 tools look for it (checked via ament_index_python).

`ros2 launch` / `ros2 run` / launch_ros find a package through the ament index, its launch and
config files under share/<package>, and its executables under lib/<package>.
"""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ament_index_python = pytest.importorskip(
    "ament_index_python", reason="ament_index_python missing: run the tests with scripts/test.sh (.venv)"
)

PACKAGE = "trt_perception"
REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_EXECUTABLES = ("segmentation_node", "detection_node")


def repo_files(folder: str, pattern: str) -> set[str]:
    """Paths (relative to the repo root) of the files under `folder` matching `pattern`."""
    return {
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / folder).rglob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def share_dir() -> Path:
    return Path(ament_index_python.get_package_share_directory(PACKAGE))


@pytest.fixture(scope="module")
def prefix() -> Path:
    return Path(ament_index_python.get_package_prefix(PACKAGE))


def test_package_is_registered_in_the_ament_index(share_dir: Path) -> None:
    assert PACKAGE in ament_index_python.get_packages_with_prefixes()
    assert filecmp.cmp(share_dir / "package.xml", REPO_ROOT / "package.xml", shallow=False)


def test_every_launch_file_is_installed_unchanged(share_dir: Path) -> None:
    expected = repo_files("launch", "*.launch.py")
    assert {"launch/seg.launch.py", "launch/det.launch.py"} <= expected
    installed = {str(p.relative_to(share_dir)) for p in (share_dir / "launch").glob("*.launch.py")}
    assert installed == expected, "re-run scripts/setup_env.sh after changing launch/"
    for name in expected:
        assert filecmp.cmp(share_dir / name, REPO_ROOT / name, shallow=False), f"{name} is stale"


@pytest.mark.parametrize("folder", ["config", "interfaces/vision_msgs/msg"])
def test_every_data_file_is_installed_unchanged(share_dir: Path, folder: str) -> None:
    expected = repo_files(folder, "*")
    assert expected, f"{folder}/ is empty"
    installed = {str(p.relative_to(share_dir)) for p in (share_dir / folder).rglob("*") if p.is_file()}
    assert installed == expected, f"re-run scripts/setup_env.sh after changing {folder}/"
    for name in expected:
        assert filecmp.cmp(share_dir / name, REPO_ROOT / name, shallow=False), f"{name} is stale"


@pytest.mark.parametrize("name", NODE_EXECUTABLES)
def test_node_executable_in_lib_starts_the_node(prefix: Path, tmp_path: Path, name: str) -> None:
    executable = prefix / "lib" / PACKAGE / name
    assert executable.is_file()
    assert os.access(executable, os.X_OK), f"{executable} is not executable"
    # Run it as `ros2 run` does (directly), with this environment's python NOT on PATH (a venv that is
    # not activated, a supervisor's PATH): the node still starts with the python of its install prefix,
    # and stops with a fatal error naming the model spec it cannot find.
    missing_spec = tmp_path / "missing_spec.yaml"
    env = dict(os.environ, PATH="/usr/bin:/bin")
    # Started from a folder holding a trt_perception/ package (a source checkout), it still runs the installed one
    # (PYTHONSAFEPATH, Python >= 3.11).
    if sys.version_info >= (3, 11):
        (tmp_path / "trt_perception").mkdir()
        (tmp_path / "trt_perception" / "__init__.py").write_text("raise SystemExit('the working directory shadows it')\n")
    completed = subprocess.run(
        [str(executable), "--ros-args", "-p", f"model_spec:={missing_spec}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0, output
    assert str(missing_spec) in output
    assert "Traceback" not in output


def catches(pid: int, number: int) -> bool:
    """Whether process ``pid`` has a handler for signal ``number`` (``SigCgt`` of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (number - 1) & 1)
    return False


@pytest.mark.parametrize("name", NODE_EXECUTABLES)
def test_console_script_stops_on_ctrl_c_while_starting(prefix: Path, tmp_path: Path, name: str) -> None:
    # bin/<node> (on PATH in a sourced workspace or an activated venv) handles a Ctrl-C that comes while it is
    # still importing as lib/<node> does: exit 0 at once (it used to be lost, and the node went on running).
    script = prefix / "bin" / name
    assert script.is_file(), f"{script} missing"
    with open(tmp_path / "output.txt", "w+") as output:
        process = subprocess.Popen([str(script), "--ros-args", "-p", "model_spec:=selfie_segmentation"],
                                   stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not catches(process.pid, signal.SIGTERM) and time.monotonic() < deadline:
                time.sleep(0.002)  # its stop-signal handlers are installed: it is running Python code of its own
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=30)
        finally:
            process.kill()
            process.wait()
        output.seek(0)
        text = output.read()
    assert code == 0, text
    assert "Traceback" not in text


def test_installed_specs_find_the_files_they_find_in_the_source_tree(share_dir: Path) -> None:
    """A bundled spec whose model/labels file exists in the repo finds it from share/ as well."""
    yaml = pytest.importorskip("yaml")
    source_specs = sorted((REPO_ROOT / "config" / "models").glob("*.yaml"))
    checked = 0
    for source_spec in source_specs:
        spec = yaml.safe_load(source_spec.read_text())
        installed_spec = share_dir / source_spec.relative_to(REPO_ROOT)
        for key in ("model", "engine", "labels"):
            value = spec.get(key)
            if not isinstance(value, str) or not (source_spec.parent / value).is_file():
                continue  # inline, empty, or a file the user provides
            target = (installed_spec.parent / value).resolve()
            assert target.is_file(), f"{source_spec.name}: {key} {value} -> {target} missing"
            assert share_dir.resolve() in target.parents, f"{source_spec.name}: {key} points outside the install"
            checked += 1
    assert checked, "no bundled spec refers to a bundled model"
