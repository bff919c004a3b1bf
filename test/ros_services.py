"""Calling another node's ROS services from the test client (lifecycle transitions and states)."""

from __future__ import annotations

import time
from typing import Any

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from node_harness import RosClient


def call_service(client: RosClient, service_type: type, name: str, request: Any, timeout: float = 60.0) -> Any:
    """The response of ``name`` to ``request``; fails when the service is absent or does not answer."""
    service = client.node.create_client(service_type, name)
    try:
        if not service.wait_for_service(timeout_sec=timeout):
            raise AssertionError(f"service {name} not available after {timeout} s")
        future = service.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise AssertionError(f"service {name}: no answer after {timeout} s")
            time.sleep(0.02)
        return future.result()
    finally:
        client.node.destroy_client(service)


def lifecycle_state(client: RosClient, node: str) -> str:
    """The label of the node's current lifecycle state (``unconfigured``, ``inactive``, ...)."""
    return str(call_service(client, GetState, f"{node}/get_state", GetState.Request()).current_state.label)


def change_state(client: RosClient, node: str, transition: int) -> bool:
    """Trigger a lifecycle transition (``lifecycle_msgs/Transition`` id); whether it succeeded."""
    request = ChangeState.Request(transition=Transition(id=transition))
    return bool(call_service(client, ChangeState, f"{node}/change_state", request).success)
