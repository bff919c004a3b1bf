"""Calling another node's ROS services from the test client (lifecycle transitions and states)."""

from __future__ import annotations

import time
import weakref
from typing import Any

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from node_harness import RosClient

# Seconds between seeing a service and the first request to it. The server may see this client's reply
# reader later than the client sees the server (asymmetric discovery, slower on a loaded machine), and
# rmw_fastrtps drops a response whose reader it has not matched within 100 ms (ros2/rmw_fastrtps#842):
# the caller then waits forever. Each service's client is made once and kept, so this is paid once.
DISCOVERY_GRACE_S = 1.0

_service_clients: weakref.WeakKeyDictionary[RosClient, dict[str, Any]] = weakref.WeakKeyDictionary()


def service_client(client: RosClient, service_type: type, name: str, timeout: float) -> Any:
    """``client``'s client of service ``name``, made on first use once the service is there."""
    clients = _service_clients.setdefault(client, {})
    if name not in clients:
        service = client.node.create_client(service_type, name)
        if not service.wait_for_service(timeout_sec=timeout):
            client.node.destroy_client(service)
            raise AssertionError(f"service {name} not available after {timeout} s")
        time.sleep(DISCOVERY_GRACE_S)
        clients[name] = service
    return clients[name]


def call_service(client: RosClient, service_type: type, name: str, request: Any, timeout: float = 60.0) -> Any:
    """The response of ``name`` to ``request``; fails when the service is absent or does not answer."""
    future = service_client(client, service_type, name, timeout).call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise AssertionError(f"service {name}: no answer after {timeout} s")
        time.sleep(0.02)
    return future.result()


def lifecycle_state(client: RosClient, node: str) -> str:
    """The label of the node's current lifecycle state (``unconfigured``, ``inactive``, ...)."""
    return str(call_service(client, GetState, f"{node}/get_state", GetState.Request()).current_state.label)


def change_state(client: RosClient, node: str, transition: int) -> bool:
    """Trigger a lifecycle transition (``lifecycle_msgs/Transition`` id); whether it succeeded."""
    request = ChangeState.Request(transition=Transition(id=transition))
    return bool(call_service(client, ChangeState, f"{node}/change_state", request).success)
