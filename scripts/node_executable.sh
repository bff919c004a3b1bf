#!/bin/sh
# A ROS 2 executable of trt_perception, installed as lib/trt_perception/<node> (segmentation_node,
# detection_node): runs that node with the Python of the prefix it is installed in, e.g. a virtual
# environment's bin/python, whatever comes first on PATH; where the prefix has no Python of its own
# (a colcon workspace, a distribution package), with python3 from PATH.
node=$(basename "$0")
prefix=$(dirname "$0")/../..
for python in "$prefix/bin/python3" "$prefix/bin/python"; do
  if [ -x "$python" ]; then
    exec "$python" -m trt_perception.ros.executable "$node" "$@"
  fi
done
exec python3 -m trt_perception.ros.executable "$node" "$@"
