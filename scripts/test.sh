#!/usr/bin/env bash
# Run the test suite in the repo's environment: builds/updates .venv first (scripts/setup_env.sh),
# then runs pytest over test/ (extra arguments go to pytest). Each pytest session gets its own ROS 2
# domain, discovery limited to this host, and a private ROS_HOME (test/conftest.py).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/scripts/setup_env.sh"
# shellcheck source=scripts/ros_env.sh
source "$REPO_ROOT/scripts/ros_env.sh"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
cd "$REPO_ROOT"

echo "[test] python -m pytest $*"
status=0
python -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
  echo "[test] pytest collected no tests"
  status=0
fi
exit $status
