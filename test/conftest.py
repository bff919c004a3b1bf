"""Test-session settings shared by all tests.

Every pytest session gets its own ROS 2 graph, so that parallel test runs on one machine never see
each other's nodes and topics: a ROS_DOMAIN_ID that no other running session holds (claimed with a
lock file), discovery limited to this host, and a private ROS_HOME (logs) removed at the end.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import pytest

DOMAIN_IDS = range(1, 101)
_session_state: dict[str, Any] = {}


def _claim_domain_id() -> tuple[int, IO[str]]:
    """Return a ROS domain id held by no other running test session, and the lock that holds it."""
    lock_dir = os.path.join(tempfile.gettempdir(), "trt_perception_ros_domains")
    os.makedirs(lock_dir, exist_ok=True)
    candidates = list(DOMAIN_IDS)
    random.Random(os.getpid()).shuffle(candidates)
    for domain_id in candidates:
        lock = open(os.path.join(lock_dir, f"{domain_id}.lock"), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return domain_id, lock
    raise RuntimeError(f"all ROS domain ids {DOMAIN_IDS.start}..{DOMAIN_IDS.stop - 1} are in use by other test sessions")


def pytest_configure(config: pytest.Config) -> None:
    """Isolate this session's ROS 2 graph before any test (or child process) starts ROS."""
    domain_id, lock = _claim_domain_id()
    ros_home = tempfile.mkdtemp(prefix="trt_perception_ros_home_")
    _session_state.update(lock=lock, ros_home=ros_home)
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated since Jazzy, would override the range
    os.environ.pop("ROS_STATIC_PEERS", None)
    os.environ["ROS_HOME"] = ros_home
    os.environ["ROS_LOG_DIR"] = os.path.join(ros_home, "log")
    _add_own_prefix_to_ament_index()


def _add_own_prefix_to_ament_index() -> None:
    """Let ament_index_python find what this interpreter's prefix holds (a venv made by
    scripts/setup_env.sh) even when AMENT_PREFIX_PATH was not exported (scripts/ros_env.sh)."""
    if not os.path.isdir(os.path.join(sys.prefix, "share", "ament_index")):
        return
    paths = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in paths:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *paths])


def pytest_unconfigure(config: pytest.Config) -> None:
    """Release the domain id and remove the session's ROS_HOME."""
    lock = _session_state.pop("lock", None)
    if lock is not None:
        lock.close()
    ros_home = _session_state.pop("ros_home", None)
    if ros_home is not None:
        shutil.rmtree(ros_home, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    """Show the ROS isolation settings at the top of the test report."""
    return (
        f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')} "
        f"ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE')} "
        f"ROS_HOME={os.environ.get('ROS_HOME')}"
    )


@pytest.fixture
def ros_context() -> Iterator[Any]:
    """An initialised rclpy Context of its own, shut down after the test."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy missing: run the tests with scripts/test.sh (.venv)")
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The environment for node processes a test module starts (``node_harness``: this session's graph)."""
    from node_harness import isolated_ros_environment

    return isolated_ros_environment()


@pytest.fixture(scope="module")
def client(request: pytest.FixtureRequest, node: Any) -> Iterator[Any]:
    """A ``node_harness.RosClient`` in the test process, once the module's ``node`` fixture has started."""
    from node_harness import RosClient

    ros = RosClient(f"{request.module.__name__}_client")
    yield ros
    ros.close()
