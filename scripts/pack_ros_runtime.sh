#!/usr/bin/env bash
# Pack the ROS 2 runtime of a venv made by scripts/setup_env.sh (the ROS wheels' files and the
# vision_msgs built from interfaces/vision_msgs; no headers, CMake files or static libraries) into
# one tar.xz, to run the node tests on a machine that has Python, numpy, OpenCV, ONNX Runtime (and
# CuPy for the GPU tests) but no ROS and no registry access -- the borrowed GPU machines.
#
#   PYTHON=python3.12 TRT_PERCEPTION_VENV=/tmp/venv312 ./scripts/setup_env.sh   # the target's Python version
#   TRT_PERCEPTION_VENV=/tmp/venv312 ./scripts/pack_ros_runtime.sh ros_runtime.tar.xz
#
# On the target, in the repository root:
#
#   mkdir -p /tmp/ros && tar -C /tmp/ros -xJf ros_runtime.tar.xz
#   export PYTHONPATH=/tmp/ros/lib/python3.12/site-packages:$PWD AMENT_PREFIX_PATH=/tmp/ros \
#     _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 \
#     LD_LIBRARY_PATH=/tmp/ros/lib:$(ls -d /tmp/ros/lib/python3*/site-packages/ros_*.libs | paste -sd:)
#   python3 -m pytest test/test_segmentation_node_gpu.py
#
# Only ROS packages travel (and the pure-Python empy and lark-parser they import): the target's own
# numpy, OpenCV and CuPy stay in use.
set -euo pipefail

die() { echo "pack_ros_runtime: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: TRT_PERCEPTION_VENV=<venv> $0 OUTPUT.tar.xz"
VENV="$(cd "${TRT_PERCEPTION_VENV:?set TRT_PERCEPTION_VENV to the venv to pack}" && pwd)"
OUTPUT="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
[ -x "$VENV/bin/python" ] || die "$VENV has no bin/python"
LIST="$(mktemp)"
trap 'rm -f "$LIST"' EXIT

"$VENV/bin/python" - "$VENV" >"$LIST" <<'EOF'
"""The venv's files of the ROS distributions and the built vision_msgs, relative to the venv."""
import importlib.metadata
import re
import sys
from pathlib import Path

venv = Path(sys.argv[1]).resolve()
skipped = re.compile(r"^include/|/cmake/|\.(a|h|hpp|hh)$|__pycache__")
names = {"empy", "lark-parser"}
files = set()
for dist in importlib.metadata.distributions():
    name = dist.metadata["Name"].lower().replace("_", "-")
    if name.startswith("ros-") or name in names:
        files.update(Path(str(path.locate())).resolve() for path in dist.files or [])
# vision_msgs is installed by CMake (setup_env.sh), not by pip: take its files by location
site = Path(next(iter(venv.glob("lib/python3*/site-packages"))))
for pattern in ("vision_msgs", "vision_msgs-*.egg-info"):
    for folder in site.glob(pattern):
        files.update(folder.rglob("*"))
files.update((venv / "share" / "vision_msgs").rglob("*"))
files.update(venv.glob("share/ament_index/resource_index/*/vision_msgs"))
files.update(venv.glob("lib/libvision_msgs__*.so"))
for path in sorted(files):
    if path.is_file() and path.is_relative_to(venv):
        relative = path.relative_to(venv).as_posix()
        if not skipped.search(relative):
            print(relative)
EOF
[ -s "$LIST" ] || die "no ROS files found in $VENV (not made by scripts/setup_env.sh?)"
grep -q "site-packages/rclpy/" "$LIST" || die "$VENV has no rclpy"
grep -q "site-packages/vision_msgs/" "$LIST" || die "$VENV has no vision_msgs"
tar -C "$VENV" -cf - -T "$LIST" | xz -9 -T0 >"$OUTPUT"
echo "pack_ros_runtime: $(wc -l <"$LIST") files -> $OUTPUT ($(du -h "$OUTPUT" | cut -f1))"
