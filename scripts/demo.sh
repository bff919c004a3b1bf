#!/usr/bin/env bash
# Demo: the segmentation node with the bundled selfie segmentation model (ONNX Runtime, CPU) on
# real images published as a camera would. Prints labels received, frames per second and latency;
# writes an overlay PNG per image to demo_output/ (or $DEMO_OUTPUT).
# Builds/updates .venv first (scripts/setup_env.sh). Extra arguments go to scripts/demo_camera.py
# (e.g. --rate 30 --duration 20).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/scripts/setup_env.sh"
# shellcheck source=scripts/ros_env.sh
source "$REPO_ROOT/scripts/ros_env.sh"
cd "$REPO_ROOT"

# A ROS graph of its own: this host only, a random domain, logs in a temporary ROS_HOME.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}"
ROS_HOME="$(mktemp -d)"
export ROS_HOME
NODE_LOG="$ROS_HOME/segmentation_node.log"
NODE="$VIRTUAL_ENV/lib/trt_perception/segmentation_node"
[[ -x "$NODE" ]] || { echo "[demo] $NODE missing: run scripts/setup_env.sh" >&2; exit 1; }

echo "[demo] starting segmentation_node (model_spec selfie_segmentation, backend onnxruntime), ROS_DOMAIN_ID=$ROS_DOMAIN_ID"
# Reliable input: the demo camera wants every frame processed (with the default best_effort input,
# large frames lose UDP fragments under load and whole frames are dropped).
"$NODE" --ros-args -p model_spec:=selfie_segmentation -p backend:=onnxruntime -p publish_overlay:=true \
  -p input_reliability:=reliable -r image:=/camera/image_raw >"$NODE_LOG" 2>&1 &
node_pid=$!
stop_node() {
  if kill -0 "$node_pid" 2>/dev/null; then
    kill -INT "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  echo "[demo] node log:"
  sed 's/^/[demo]   /' "$NODE_LOG"
  rm -rf "$ROS_HOME"
}
trap stop_node EXIT

python scripts/demo_camera.py --output "${DEMO_OUTPUT:-demo_output}" "$@" \
  test/fixtures/images/astronaut.png test/fixtures/images/coffee.png test/fixtures/images/motorcycle_left.png
