"""package.xml declares what the code imports, as rosdep keys, and nothing it does not use.

`rosdep install --from-paths src` (README, "Using it on a robot") installs exactly what package.xml names:
a module the package imports at run time without an `exec_depend` is missing on a fresh robot, a module only
the tests import needs a `test_depend`, and a declared key nothing imports installs something for nothing.
The imports are read with ast (nothing executed) from trt_perception/ and launch/ (run time) and test/.
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Imported module (top level) -> its rosdep key (ROS packages: the package name; others: rosdistro's python.yaml).
ROSDEP_KEYS = {
    "ament_index_python": "ament_index_python",
    "cv2": "python3-opencv",
    "diagnostic_msgs": "diagnostic_msgs",
    "geometry_msgs": "geometry_msgs",
    "hypothesis": "python3-hypothesis",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "launch_testing": "launch_testing",
    "lifecycle_msgs": "lifecycle_msgs",
    "matplotlib": "python3-matplotlib",
    "numba": "python3-numba",
    "numpy": "python3-numpy",
    "PIL": "python3-pil",
    "pytest": "python3-pytest",
    "rcl_interfaces": "rcl_interfaces",
    "rclpy": "rclpy",
    "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs",
    "tqdm": "python3-tqdm",
    "vision_msgs": "vision_msgs",
    "yaml": "python3-yaml",
}
# Installed by pip or NVIDIA's packages as README says, not by rosdep (package.xml's comments say why).
NOT_DECLARED = {
    "colcon_core", "colcon_ros",  # the build tool itself (test_colcon)
    "cupy", "onnx", "onnxruntime", "pycocotools", "ray", "rosbags", "simplejpeg", "tensorrt",
}


def top_level_imports(files: Iterable[Path]) -> set[str]:
    """Top-level names of the absolute imports (and `pytest.importorskip("name")`) in `files`."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "importorskip" and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(str(node.args[0].value).split(".")[0])
    return names


def third_party(names: set[str], local: set[str]) -> set[str]:
    return {name for name in names if name not in sys.stdlib_module_names and name not in local}


def declared(tag: str) -> set[str]:
    root = ElementTree.parse(REPO / "package.xml").getroot()
    return {element.text.strip() for element in root.iter(tag) if element.text}


def runtime_imports() -> set[str]:
    files = [*(REPO / "trt_perception").rglob("*.py"), *(REPO / "launch").glob("*.py")]
    return third_party(top_level_imports(files), {"trt_perception"})


def imports_of_tests() -> set[str]:
    test_dir = REPO / "test"
    local = {"trt_perception", "conftest", *(p.stem for p in test_dir.glob("*.py")),
             *(p.name for p in test_dir.iterdir() if p.is_dir())}
    return third_party(top_level_imports(test_dir.rglob("*.py")), local)


def test_every_runtime_import_has_an_exec_depend() -> None:
    imports = runtime_imports()
    unknown = imports - ROSDEP_KEYS.keys() - NOT_DECLARED
    assert not unknown, f"new third-party imports {sorted(unknown)}: add their rosdep keys here and to package.xml"
    missing = {ROSDEP_KEYS[name] for name in imports & ROSDEP_KEYS.keys()} - declared("exec_depend")
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)}"


def test_every_test_import_has_a_test_or_exec_depend() -> None:
    imports = imports_of_tests()
    unknown = imports - ROSDEP_KEYS.keys() - NOT_DECLARED
    assert not unknown, f"new third-party imports in test/ {sorted(unknown)}: add their rosdep keys here and to package.xml"
    keys = {ROSDEP_KEYS[name] for name in imports & ROSDEP_KEYS.keys()}
    missing = keys - declared("exec_depend") - declared("test_depend")
    assert not missing, f"package.xml lacks <test_depend> for {sorted(missing)}"


def test_every_declared_dependency_is_imported() -> None:
    keys_of = {key: name for name, key in ROSDEP_KEYS.items()}
    unused_exec = {key for key in declared("exec_depend") if keys_of.get(key) not in runtime_imports()}
    assert not unused_exec, f"<exec_depend> that trt_perception/ and launch/ never import: {sorted(unused_exec)}"
    test_only = imports_of_tests() - runtime_imports()
    unused_test = {key for key in declared("test_depend") if keys_of.get(key) not in test_only}
    assert not unused_test, f"<test_depend> that test/ never imports (or that is an exec_depend): {sorted(unused_test)}"
