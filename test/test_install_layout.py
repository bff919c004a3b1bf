"""The installed package is laid out the way ROS 2 tools look for it (checked via ament_index_python).

`ros2 launch` / `ros2 run` / launch_ros find a package through the ament index, its launch and
config files under share/<package>, and its executables under lib/<package>.
"""

from __future__ import annotations

import ast
import filecmp
import os
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
    installed = {str(p.relative_to(share_dir)) for p in (share_dir / "launch").glob("*.launch.py")}
    assert installed == expected, "re-run scripts/setup_env.sh after changing launch/"
    for name in expected:
        assert filecmp.cmp(share_dir / name, REPO_ROOT / name, shallow=False), f"{name} is stale"


def test_every_config_file_is_installed_unchanged(share_dir: Path) -> None:
    expected = repo_files("config", "*")
    assert expected, "config/ is empty"
    installed = {str(p.relative_to(share_dir)) for p in (share_dir / "config").rglob("*") if p.is_file()}
    assert installed == expected, "re-run scripts/setup_env.sh after changing config/"
    for name in expected:
        assert filecmp.cmp(share_dir / name, REPO_ROOT / name, shallow=False), f"{name} is stale"


@pytest.mark.parametrize("name", NODE_EXECUTABLES)
def test_node_executable_is_in_lib_and_runs_the_node_module(prefix: Path, name: str) -> None:
    executable = prefix / "lib" / PACKAGE / name
    assert executable.is_file()
    assert os.access(executable, os.X_OK), f"{executable} is not executable"
    source = executable.read_text()
    assert source.startswith("#!/usr/bin/env python3\n")
    imports = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)]
    modules = {node.module for node in imports}
    assert f"{PACKAGE}.ros.{name}" in modules
    # the module the wrapper runs exists and defines main()
    module_path = REPO_ROOT / PACKAGE / "ros" / f"{name}.py"
    tree = ast.parse(module_path.read_text())
    assert any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)


def test_installed_bundled_specs_find_their_models(share_dir: Path) -> None:
    yaml = pytest.importorskip("yaml")
    specs = sorted((share_dir / "config" / "models").glob("*.yaml"))
    assert specs, "no bundled model specs installed"
    for spec_path in specs:
        spec = yaml.safe_load(spec_path.read_text())
        for key in ("model", "labels"):
            value = spec.get(key)
            if isinstance(value, str):
                target = (spec_path.parent / value).resolve()
                assert target.is_file(), f"{spec_path.name}: {key} {value} -> {target} missing"
                assert share_dir.resolve() in target.parents, f"{spec_path.name}: {key} points outside the install"
