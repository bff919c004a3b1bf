#!/usr/bin/env bash
# Demo: a node with a bundled real model (ONNX Runtime, CPU) on real images published as a camera
# would. `./scripts/demo.sh` (or `segmentation`): segmentation_node with MediaPipe selfie
# segmentation; `./scripts/demo.sh detection`: detection_node with the CenterNet COCO detector.
# Prints what the node returns (class shares or detections), frames per second and latency; writes
# an overlay PNG per image to demo_output/ (or $DEMO_OUTPUT).
# Builds/updates .venv first (scripts/setup_env.sh). Further arguments go to scripts/demo_camera.py
# (e.g. --rate 30 --duration 20).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TASK=segmentation
if [[ "${1:-}" == segmentation || "${1:-}" == detection ]]; then
  TASK="$1"
  shift
fi
IMAGES=test/fixtures/images
if [[ "$TASK" == detection ]]; then
  MODEL_SPEC=centernet_mobilenetv3_coco
  DEMO_IMAGES=("$IMAGES/dog.jpg" "$IMAGES/person.jpg" "$IMAGES/coffee.png" "$IMAGES/motorcycle_left.png")
else
  MODEL_SPEC=selfie_segmentation
  DEMO_IMAGES=("$IMAGES/astronaut.png" "$IMAGES/coffee.png" "$IMAGES/motorcycle_left.png")
fi
bash "$REPO_ROOT/scripts/setup_env.sh"
# shellcheck source=scripts/ros_env.sh
source "$REPO_ROOT/scripts/ros_env.sh"
cd "$REPO_ROOT"

# A ROS graph of its own: this host only, a random domain, logs in a temporary ROS_HOME.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}"
ROS_HOME="$(mktemp -d)"
export ROS_HOME
NODE_LOG="$ROS_HOME/${TASK}_node.log"
NODE="$VIRTUAL_ENV/lib/trt_perception/${TASK}_node"
[[ -x "$NODE" ]] || { echo "[demo] $NODE missing: run scripts/setup_env.sh" >&2; exit 1; }

echo "[demo] starting ${TASK}_node (model_spec $MODEL_SPEC, backend onnxruntime), ROS_DOMAIN_ID=$ROS_DOMAIN_ID"
# Reliable input: the demo camera wants every frame processed (with the default best_effort input,
# large frames lose UDP fragments under load and whole frames are dropped).
"$NODE" --ros-args -p model_spec:="$MODEL_SPEC" -p backend:=onnxruntime -p publish_overlay:=true \
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

python scripts/demo_camera.py --task "$TASK" --node "/$TASK" --output "${DEMO_OUTPUT:-demo_output}" "$@" \
  "${DEMO_IMAGES[@]}"
