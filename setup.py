"""Build script of the trt_perception ament_python package.

Installs, besides the Python package:
- the ament index marker and package.xml (so `ament_index_python` and `ros2` find the package),
- `launch/*.launch.py`, everything under `config/` and the bundled real models
  (`test/fixtures/models`, referenced by the bundled specs) into `share/trt_perception`,
- one small executable wrapper per node into `lib/trt_perception` (where `ros2 run` and
  launch_ros look), through `data_files`, so that it works after `colcon build` and after a
  plain `pip install` alike (pip ignores setup.cfg's `install_scripts`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.dist import Distribution

PACKAGE_NAME = "trt_perception"
ROOT = Path(__file__).resolve().parent

# ROS 2 node executables: name -> "module:function".
NODE_EXECUTABLES = {
    "segmentation_node": "trt_perception.ros.segmentation_node:main",
    "detection_node": "trt_perception.ros.detection_node:main",
}

# The interpreter that runs this build is the one the package is installed for (a venv's python, or
# /usr/bin/python3 on a robot), so the wrappers name it instead of whatever `python3` is first on PATH.
WRAPPER_TEMPLATE = '''#!{python}
"""ROS 2 executable `{name}` of {package} (calls {target})."""
import sys

from trt_perception.ros.stop_signals import StopRequested, install_stop_signals

install_stop_signals()  # SIGINT/SIGTERM while the node still imports: exit 0, like a stop later on
try:
    from {module} import {function}

    sys.exit({function}())
except StopRequested:
    sys.exit(0)
'''


class DataFilesInEditableDistribution(Distribution):
    """Also install `data_files` on an editable install (`pip install -e .`).

    setuptools' editable_wheel installs data only when the distribution has `has_data()`, a method
    distutils never defined (it has `has_data_files()`), so the share/ and lib/ files went missing.
    """

    def has_data(self) -> bool:
        return self.has_data_files()


def node_wrappers() -> list[str]:
    """Write one executable wrapper per node into a temporary folder (removed when the build ends, so a
    build writes nothing into the source tree) and return their paths."""
    wrapper_dir = Path(tempfile.mkdtemp(prefix=f"{PACKAGE_NAME}_node_wrappers_"))
    atexit.register(shutil.rmtree, wrapper_dir, ignore_errors=True)
    paths = []
    for name, target in NODE_EXECUTABLES.items():
        module, function = target.split(":")
        path = wrapper_dir / name
        path.write_text(WRAPPER_TEMPLATE.format(
            python=sys.executable, name=name, package=PACKAGE_NAME, target=target, module=module, function=function
        ))
        path.chmod(0o755)
        paths.append(str(path))
    return paths


def tree_data_files(folder: str) -> list[tuple[str, list[str]]]:
    """Map every file under `folder` (recursively) to share/trt_perception/<same path>."""
    entries = []
    for directory, _, files in sorted(os.walk(ROOT / folder)):
        relative_dir = os.path.relpath(directory, ROOT)
        names = sorted(f for f in files if not f.endswith((".pyc", ".pyo")))
        if names:
            entries.append(
                (
                    os.path.join("share", PACKAGE_NAME, relative_dir),
                    [os.path.join(relative_dir, name) for name in names],
                )
            )
    return entries


setup(
    distclass=DataFilesInEditableDistribution,
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE_NAME, f"{PACKAGE_NAME}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
        (
            f"share/{PACKAGE_NAME}/launch",
            sorted(os.path.relpath(p, ROOT) for p in (ROOT / "launch").glob("*.launch.py")),
        ),
        *tree_data_files("config"),
        # the real models the bundled specs in config/models point to (relative to share/trt_perception)
        *tree_data_files("test/fixtures/models"),
        # vision_msgs definitions for rosbags' type store (bag tools without a ROS vision_msgs)
        *tree_data_files("interfaces/vision_msgs/msg"),
        (f"lib/{PACKAGE_NAME}", node_wrappers()),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    python_requires=">=3.10",
    maintainer="trt_perception maintainers",
    maintainer_email="maintainers@trt-perception.invalid",
    description="Segmentation and detection networks (ONNX Runtime, TensorRT) on ROS 2 camera streams.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "trt-perception = trt_perception.cli.main:main",
            *(f"{name} = {target}" for name, target in NODE_EXECUTABLES.items()),
        ],
    },
)
