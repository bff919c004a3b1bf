"""Build script of the trt_perception ament_python package.

Installs, besides the Python package:
- the ament index marker and package.xml (so `ament_index_python` and `ros2` find the package),
- `launch/*.launch.py`, everything under `config/` and the bundled real models
  (`test/fixtures/models`, referenced by the bundled specs) into `share/trt_perception`,
- one executable per node into `lib/trt_perception` (where `ros2 run` and launch_ros look), through
  `data_files`, so that it works after `colcon build` (also `--symlink-install`) and after a plain
  `pip install` alike (pip ignores setup.cfg's `install_scripts`). They are tracked files
  (`scripts/nodes/*` -> `scripts/node_executable.sh`): a build writes nothing into the source tree.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.dist import Distribution

PACKAGE_NAME = "trt_perception"
ROOT = Path(__file__).resolve().parent

# ROS 2 node executables (trt_perception/ros/executable.py's NODE_ENTRY_POINTS); their console scripts go through
# executable.console_main, which installs the stop-signal handlers before importing rclpy, as lib/ ones do.
NODE_EXECUTABLES = ("segmentation_node", "detection_node", "segmentation_lifecycle_node", "detection_lifecycle_node")


class DataFilesInEditableDistribution(Distribution):
    """Also install `data_files` on an editable install (`pip install -e .`).

    setuptools' editable_wheel installs data only when the distribution has `has_data()`, a method
    distutils never defined (it has `has_data_files()`), so the share/ and lib/ files went missing.
    """

    def has_data(self) -> bool:
        return self.has_data_files()


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
        # tracked, unchanged by the build (scripts/node_executable.sh: they pick the prefix's Python)
        (f"lib/{PACKAGE_NAME}", [f"scripts/nodes/{name}" for name in NODE_EXECUTABLES]),
    ],
    install_requires=["setuptools"],
    # `colcon test` runs pytest only when the package declares it (as `ros2 pkg create` writes it);
    # `cli`: the trt-perception commands' dependencies that rosdep has no key for (README, robot install);
    # `fleet`: bag-eval over many bags on a Ray cluster (trt_perception/evaluation/fleet.py).
    extras_require={"test": ["pytest"], "cli": ["rosbags", "pycocotools"], "fleet": ["ray>=2.9"]},
    zip_safe=False,
    python_requires=">=3.10",
    maintainer="trt_perception maintainers",
    maintainer_email="maintainers@trt-perception.invalid",
    description="Segmentation and detection networks (ONNX Runtime, TensorRT) on ROS 2 camera streams.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "trt-perception = trt_perception.cli.main:main",
            *(f"{name} = trt_perception.ros.executable:console_main" for name in NODE_EXECUTABLES),
        ],
    },
)
