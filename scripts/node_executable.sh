#!/bin/sh
# A ROS 2 executable of trt_perception, installed as lib/trt_perception/<node> (segmentation_node,
# detection_node): runs that node with the Python of the prefix it is installed in, e.g. a virtual
# environment's bin/python, whatever comes first on PATH; where the prefix has no Python of its own
# (a colcon workspace), with the Python that installed the package, named on the first line of its
# console script bin/<node> (colcon may run in a venv that is not on PATH); else python3 from PATH.
node=$(basename "$0")
prefix=$(dirname "$0")/../..
# `python -m` would put the working directory first on sys.path, so a trt_perception/ folder there (the source
# checkout) would run instead of the installed package; Python >= 3.11 leaves it out with this variable.
export PYTHONSAFEPATH=1
for python in "$prefix/bin/python3" "$prefix/bin/python"; do
  if [ -x "$python" ]; then
    exec "$python" -m trt_perception.ros.executable "$node" "$@"
  fi
done
if [ -r "$prefix/bin/$node" ] && IFS= read -r first_line < "$prefix/bin/$node"; then
  python=${first_line#\#!}
  case "$python" in  # "#!/path/to/python3" (not "#!/usr/bin/env python3", nor setuptools' "#!/bin/sh" for long paths)
    /*/python*)
      if [ -x "$python" ]; then
        exec "$python" -m trt_perception.ros.executable "$node" "$@"
      fi ;;
  esac
fi
exec python3 -m trt_perception.ros.executable "$node" "$@"
