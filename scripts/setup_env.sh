#!/usr/bin/env bash
# Build the repo's Python environment (.venv) from the package registries alone:
#   1. a venv with Python >= 3.10,
#   2. ROS 2 wheels (rclpy + Fast DDS, sensor/std/geometry/diagnostic msgs): requirements-ros.txt
#      (Jazzy) or requirements-ros-kilted.txt (Kilted),
#   3. vision_msgs built from interfaces/vision_msgs with the rosidl/ament_cmake wheels
#      (requirements-interfaces[-kilted].txt) and the system's cmake and C/C++ compiler -- only when
#      vision_msgs is not importable already,
#   4. the project's Python dependencies (requirements-dev.txt) and trt_perception itself
#      (editable, so share/trt_perception and lib/trt_perception land in the venv prefix).
# Idempotent: a stamp keyed on the hash of every input makes a second run take about a second.
#
# Environment: TRT_PERCEPTION_VENV (venv path, default <repo>/.venv), PYTHON (interpreter to
# build the venv from, default python3), TRT_PERCEPTION_FORCE_SETUP=1 (ignore the stamp),
# TRT_PERCEPTION_ROS_DISTRO=jazzy|kilted (which ROS 2 wheels, default jazzy; one distribution per venv).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRT_PERCEPTION_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.trt_perception_setup_stamp"
INTERFACES_DIR="$REPO_ROOT/interfaces/vision_msgs"
INTERFACES_STAMP="$VENV/share/vision_msgs/.built_by_trt_perception"
DISTRO_STAMP="$VENV/.trt_perception_ros_distro"
ROS_DISTRO_NAME="${TRT_PERCEPTION_ROS_DISTRO:-jazzy}"

say() { printf '[setup_env] %s\n' "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }

# Hash of the files under the given paths (relative to the repo root; missing paths are skipped).
hash_inputs() {
  local path existing=()
  for path in "$@"; do
    [[ -e "$REPO_ROOT/$path" ]] && existing+=("$path")
  done
  (cd "$REPO_ROOT" && find "${existing[@]}" -type f ! -name '*.pyc' | LC_ALL=C sort | xargs -r sha256sum \
    | sha256sum | cut -d' ' -f1)
}

# pip install, printing only what was installed (and the whole log when it fails).
pip_install() {
  local log
  log="$(mktemp)"
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@" >"$log" 2>&1; then
    grep -v 'is ignored: it is neither a file nor a directory' "$log" >&2 || true
    rm -f "$log"
    die "pip install $* failed"
  fi
  grep -E '^Successfully installed' "$log" | sed 's/^/[setup_env]   /' || true
  rm -f "$log"
}

case "$ROS_DISTRO_NAME" in
  jazzy) ROS_REQUIREMENTS=requirements-ros.txt INTERFACES_REQUIREMENTS=requirements-interfaces.txt ;;
  kilted) ROS_REQUIREMENTS=requirements-ros-kilted.txt INTERFACES_REQUIREMENTS=requirements-interfaces-kilted.txt ;;
  *) die "TRT_PERCEPTION_ROS_DISTRO=$ROS_DISTRO_NAME: expected jazzy or kilted" ;;
esac

cd "$REPO_ROOT"
# One setup at a time per venv (parallel test runs would otherwise pip-install into it together).
exec 9>"$VENV.lock"
if ! flock -n 9; then
  say "waiting for another setup_env.sh run on $VENV to finish"
  flock 9
fi
SETUP_HASH="$ROS_DISTRO_NAME-$(hash_inputs scripts/setup_env.sh scripts/ros_env.sh requirements.txt \
  requirements-dev.txt "$ROS_REQUIREMENTS" "$INTERFACES_REQUIREMENTS" setup.py setup.cfg package.xml resource \
  launch config test/fixtures/models interfaces scripts/node_executable.sh scripts/nodes)"
INTERFACES_HASH="$ROS_DISTRO_NAME-$(hash_inputs interfaces/vision_msgs "$INTERFACES_REQUIREMENTS")"

# Everything below runs the venv's own python with its ROS environment.
activate() {
  # shellcheck source=scripts/ros_env.sh
  TRT_PERCEPTION_VENV="$VENV" source "$REPO_ROOT/scripts/ros_env.sh"
}

if [[ -z "${TRT_PERCEPTION_FORCE_SETUP:-}" && -f "$STAMP" && "$(cat "$STAMP")" == "$SETUP_HASH" ]]; then
  activate
  if python -c 'import rclpy, sensor_msgs.msg, vision_msgs.msg, trt_perception' 2>/dev/null; then
    say "environment in $VENV is up to date (inputs unchanged)"
    exit 0
  fi
  say "stamp matches but imports fail: rebuilding"
fi

# 1. The venv.
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$PYTHON is $("$PYTHON" --version 2>&1); trt_perception needs Python >= 3.10"
command -v cmake >/dev/null || die "cmake not found (Debian: apt-get install cmake)"
command -v gcc >/dev/null && command -v g++ >/dev/null || die "gcc/g++ not found (Debian: apt-get install build-essential)"
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating venv $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
  echo "$ROS_DISTRO_NAME" >"$DISTRO_STAMP"
fi
# One ROS 2 distribution per venv: wheels of two would mix (e.g. two ament_package copies).
venv_distro="$(cat "$DISTRO_STAMP" 2>/dev/null || echo jazzy)"  # venvs made before the switch hold Jazzy
[[ "$venv_distro" == "$ROS_DISTRO_NAME" ]] \
  || die "$VENV holds ROS 2 $venv_distro wheels, not $ROS_DISTRO_NAME: set TRT_PERCEPTION_VENV to another path or delete $VENV"
rm -f "$STAMP"

# 2. + 4. ROS 2 wheels, the project's dependencies and the tools to build interfaces, in one resolve.
say "installing ROS 2 $ROS_DISTRO_NAME wheels and Python dependencies ($ROS_REQUIREMENTS, requirements-dev.txt)"
pip_install -r "$ROS_REQUIREMENTS" -r requirements-dev.txt
# TensorRT's type stubs, for mypy only: in a folder of their own, since installed normally they
# would shadow a real TensorRT and their dependencies try to download TensorRT itself.
say "installing tensorrt-stubs into $VENV/tensorrt-stubs (type checking of the TensorRT backend)"
pip_install --no-deps --upgrade --target "$VENV/tensorrt-stubs" tensorrt-stubs==10.13.0.35.1
activate

# 3. vision_msgs.
vision_msgs_importable() { python -c 'import vision_msgs.msg' 2>/dev/null; }
if vision_msgs_importable && [[ ! -f "$INTERFACES_STAMP" ]]; then
  say "vision_msgs is importable from $(python -c 'import os, vision_msgs; print(os.path.dirname(vision_msgs.__file__))'): using it"
elif vision_msgs_importable && [[ "$(cat "$INTERFACES_STAMP")" == "$INTERFACES_HASH" ]]; then
  say "vision_msgs already built from interfaces/vision_msgs"
else
  say "building vision_msgs from interfaces/vision_msgs (rosidl + ament_cmake wheels, cmake, gcc)"
  pip_install -r "$INTERFACES_REQUIREMENTS"
  # The wheels' CMake exports hard-code the include paths of the machine that built them.
  python_include="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  numpy_include="$(python -c 'import numpy; print(numpy.get_include())')"
  [[ -f "$python_include/Python.h" ]] || die "Python headers missing in $python_include (Debian: apt-get install python3-dev)"
  { grep -rlZ --include='*.cmake' '/opt/python/cp3' "$VENV/share" || true; } | xargs -0 -r sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$python_include#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$numpy_include#g"
  build_dir="$VENV/.build/vision_msgs"
  rm -rf "$build_dir"
  mkdir -p "$build_dir"
  start=$SECONDS
  if ! cmake -S "$INTERFACES_DIR" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
      -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$VENV/bin/python" >"$build_dir/configure.log" 2>&1; then
    cat "$build_dir/configure.log" >&2
    die "configuring vision_msgs failed"
  fi
  if ! cmake --build "$build_dir" -j "$(nproc)" >"$build_dir/build.log" 2>&1 \
      || ! cmake --install "$build_dir" >"$build_dir/install.log" 2>&1; then
    tail -n 60 "$build_dir/build.log" "$build_dir/install.log" >&2
    die "building vision_msgs failed (logs in $build_dir)"
  fi
  vision_msgs_importable || die "vision_msgs built but not importable"
  echo "$INTERFACES_HASH" >"$INTERFACES_STAMP"
  say "vision_msgs built and installed into $VENV in $((SECONDS - start)) s"
fi

# 4. The package itself (editable: source changes need no reinstall; data files are copied).
# --use-pep517: an editable wheel (setuptools' build_editable) with every pip. Without it, a pip
# before 23.1 (Debian 12's python3 venvs bring 23.0.1) falls back to `setup.py develop`, which
# installs no data files: no share/trt_perception, so neither ament_index nor ros2 find the package.
say "installing trt_perception (editable) into $VENV"
pip_install --no-deps --no-build-isolation --use-pep517 -e "$REPO_ROOT"

python -c 'import rclpy, sensor_msgs.msg, vision_msgs.msg, diagnostic_msgs.msg, trt_perception' \
  || die "the environment was built but an import fails"
echo "$SETUP_HASH" >"$STAMP"
say "environment ready: source scripts/ros_env.sh (or run $VENV/bin/python)"
