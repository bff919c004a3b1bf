# Source this file (bash) to use the repo's .venv with its ROS 2 wheels:
#   source scripts/ros_env.sh
# Sets PATH, VIRTUAL_ENV, AMENT_PREFIX_PATH and LD_LIBRARY_PATH for the venv (the same library path
# the wheels' start-up hook would compute, so the venv's python does not need to re-exec itself).
# TRT_PERCEPTION_VENV overrides the venv location (default: <repo>/.venv).

_trt_repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV="${TRT_PERCEPTION_VENV:-$_trt_repo_root/.venv}"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
_trt_ld_path="$VIRTUAL_ENV/lib"
for _trt_libs in "$VIRTUAL_ENV"/lib/python3*/site-packages/ros_*.libs; do
  [ -d "$_trt_libs" ] && _trt_ld_path="$_trt_ld_path:$_trt_libs"
done
export LD_LIBRARY_PATH="$_trt_ld_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
unset _trt_repo_root _trt_ld_path _trt_libs
