"""The one harness of the node tests and the launch tests: run a node executable as its own process
(or find the one launch started) and talk to it over DDS.

Each test module uses its own random ROS domain (localhost only), so parallel test runs and other
ROS processes on the machine do not see each other.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "test" / "fixtures" / "images"


def isolated_ros_environment() -> dict[str, str]:
    """Environment variables for a private ROS domain on localhost, also applied to this process."""
    variables = {
        "ROS_DOMAIN_ID": str(random.randint(100, 230)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RCUTILS_COLORIZED_OUTPUT": "0",
    }
    os.environ.update(variables)
    return dict(os.environ)


def node_command(executable: str) -> list[str]:
    """The installed executable lib/trt_perception/<name> when present (run directly, as ``ros2 run`` does),
    else the module it runs, with this python."""
    installed = Path(sys.prefix) / "lib" / "trt_perception" / executable
    if installed.is_file():
        return [str(installed)]
    return [sys.executable, "-m", "trt_perception.ros.executable", executable]


def qos(reliable: bool, depth: int = 10, transient_local: bool = False) -> QoSProfile:
    """A keep-last QoS profile."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE,
    )


class NodeProcess:
    """A node executable running in its own process; its output goes to a temporary file that is
    read back into memory (and removed) when the process ends."""

    def __init__(self, executable: str, ros_args: Sequence[str], env: Mapping[str, str]) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix=f"{executable}_", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self._final_output: str | None = None
        self.process = subprocess.Popen(
            [*node_command(executable), "--ros-args", *ros_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=dict(env), cwd=tempfile.gettempdir(),
        )

    @property
    def output(self) -> str:
        """Everything the node printed so far."""
        if self._final_output is not None:
            return self._final_output
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        """Wait until ``text`` appears in the node's output; fail if the node exits first."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.process.poll() is not None:
                raise AssertionError(f"node exited with {self.process.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in node output after {timeout} s:\n{self.output}")
            time.sleep(0.05)

    def rss_bytes(self) -> int:
        """Resident memory of the node process."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("VmRSS not found")

    def thread_count(self) -> int:
        """Threads of the node process."""
        return len(list(Path(f"/proc/{self.process.pid}/task").iterdir()))

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the process to exit by itself; its exit code."""
        self.process.wait(timeout)
        return self._finish()

    def stop(self, signal_number: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Send a signal and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self._finish()

    def _finish(self) -> int:
        if self._final_output is None:
            self._log.close()
            self._final_output = self.log_path.read_text(errors="replace")
            self.log_path.unlink()
        return self.process.returncode


def node_arguments(name: str, parameters: Sequence[str] = (), compressed: bool = False) -> list[str]:
    """ROS arguments of a test node: namespace /<name>, input remapped to /camera/<name>, ``-p`` per parameter."""
    remap = f"{'image/compressed' if compressed else 'image'}:=/camera/{name}"
    return ["-r", f"__ns:=/{name}", "-r", remap, *(item for value in parameters for item in ("-p", value))]


@contextmanager
def node_session(
    executable: str, name: str, env: Mapping[str, str], parameters: Sequence[str] = (), compressed: bool = False
) -> Iterator[tuple[NodeProcess, RosClient]]:
    """A node started with ``node_arguments`` (ready once it logs its input topic) and a client; on leaving,
    the client closes and the node gets SIGINT (its exit code is then in ``node.process.returncode``)."""
    node = NodeProcess(executable, node_arguments(name, parameters, compressed), env)
    ros = None
    try:
        node.wait_for_output(f"on /camera/{name}")
        ros = RosClient(f"{name}_client")
        yield node, ros
    finally:
        if ros is not None:
            ros.close()
        node.stop()


class TopicRecorder:
    """Collects the messages of one topic."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._condition = threading.Condition()

    def __call__(self, message: Any) -> None:
        with self._condition:
            self.messages.append(message)
            self._condition.notify_all()

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 20.0, start: int = 0) -> Any:
        """The first message from index ``start`` on (old or new) satisfying ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._condition:
            checked = start
            while True:
                for message in self.messages[checked:]:
                    if predicate(message):
                        return message
                checked = len(self.messages)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching message within {timeout} s ({checked} received)")
                self._condition.wait(remaining)


class RosClient:
    """A test-side node in its own context, spun on a background thread."""

    def __init__(self, name: str = "node_test_client") -> None:
        self.context = Context()
        # No rclpy signal handlers: their C++ thread aborts the process (exit 134) when a runner such as
        # launch_test exits while a test thread still holds this client.
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def record(self, message_type: type, topic: str, profile: QoSProfile) -> TopicRecorder:
        """Subscribe ``topic`` and return its recorder."""
        recorder = TopicRecorder()
        self.node.create_subscription(message_type, topic, recorder, profile)
        return recorder

    def wait_for_subscribers(self, publisher: Any, count: int = 1, timeout: float = 20.0) -> None:
        """Wait until ``publisher`` has matched ``count`` subscriptions; for a reliable publisher, also
        until every subscription of its topic is reliable. A node with ``input_reliability: auto``
        subscribes best effort first and re-subscribes reliable within a second of seeing a reliable
        publisher; a frame published during that switch can be lost."""
        deadline = time.monotonic() + timeout
        reliable = publisher.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        while publisher.get_subscription_count() < count or (reliable and not self._all_reliable(publisher.topic_name)):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{publisher.topic_name}: not {count} reliable subscriber(s) after {timeout} s: "
                    f"{[info.qos_profile.reliability.name for info in self.node.get_subscriptions_info_by_topic(publisher.topic_name)]}"
                )
            time.sleep(0.05)

    def _all_reliable(self, topic: str) -> bool:
        subscriptions = self.node.get_subscriptions_info_by_topic(topic)
        return bool(subscriptions) and all(
            info.qos_profile.reliability == ReliabilityPolicy.RELIABLE for info in subscriptions
        )

    def wait_for_publishers(self, topic: str, timeout: float = 20.0) -> None:
        """Wait until somebody publishes ``topic``."""
        deadline = time.monotonic() + timeout
        while self.node.count_publishers(topic) == 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: no publisher after {timeout} s")
            time.sleep(0.05)

    def camera_and_output(
        self, camera_type: type, camera_topic: str, output_type: type, output_topic: str
    ) -> tuple[Any, TopicRecorder]:
        """A reliable camera publisher and a recorder of a node output, once both are connected."""
        camera = self.node.create_publisher(camera_type, camera_topic, qos(reliable=True))
        recorder = self.record(output_type, output_topic, qos(reliable=True))
        self.wait_for_subscribers(camera)
        self.wait_for_publishers(output_topic)
        time.sleep(1.0)  # the node must see our subscription too, or it skips work (lazy)
        return camera, recorder

    def set_parameters(
        self, node_name: str, values: Mapping[str, Any], timeout: float = 10.0
    ) -> list[SetParametersResult]:
        """Set parameters of another node through its parameter service."""
        client = self.node.create_client(SetParameters, f"{node_name}/set_parameters")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"{node_name}/set_parameters not available")
            request = SetParameters.Request(
                parameters=[Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]
            )
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise AssertionError("set_parameters timed out")
                time.sleep(0.02)
            return list(future.result().results)
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        """Stop spinning and shut the context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)


def read_rgb(name: str) -> np.ndarray:
    """A sample image from test/fixtures/images as RGB."""
    bgr = cv2.imread(str(IMAGES / name))
    assert bgr is not None, f"cannot read {name}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def camera_frame(name: str, height: int, width: int) -> np.ndarray:
    """A sample image scaled to a camera size (rgb8), the same in every process."""
    return np.ascontiguousarray(cv2.resize(read_rgb(name), (width, height), interpolation=cv2.INTER_AREA))


def image_message(pixels: np.ndarray, encoding: str, frame_id: str, stamp: tuple[int, int]) -> Image:
    """A ``sensor_msgs/Image`` of ``pixels`` (rows unpadded)."""
    message = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=False)
    message.step = pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1) * pixels.dtype.itemsize
    message.data = np.ascontiguousarray(pixels).tobytes()
    message.header.frame_id = frame_id
    message.header.stamp.sec, message.header.stamp.nanosec = stamp
    return message


def compressed_message(data: bytes, image_format: str, frame_id: str, stamp: tuple[int, int]) -> CompressedImage:
    """A ``sensor_msgs/CompressedImage``."""
    message = CompressedImage(format=image_format, data=data)
    message.header.frame_id = frame_id
    message.header.stamp.sec, message.header.stamp.nanosec = stamp
    return message


def diagnostic_values(array: Any, node_fqn: str) -> dict[str, str] | None:
    """Key/values of the node's status in a DiagnosticArray, or None when absent."""
    for status in array.status:
        if status.name.startswith(f"{node_fqn}:"):
            return {item.key: item.value for item in status.values}
    return None


def wait_for_diagnostics(
    recorder: TopicRecorder,
    node_fqn: str,
    predicate: Callable[[dict[str, str]], bool],
    timeout: float = 20.0,
    start: int = 0,
) -> dict[str, str]:
    """The key/values of the first status of ``node_fqn`` on /diagnostics (recorded from message ``start``
    on) satisfying ``predicate``."""
    def matches(array: Any) -> bool:
        values = diagnostic_values(array, node_fqn)
        return values is not None and predicate(values)

    values = diagnostic_values(recorder.wait_for(matches, timeout, start), node_fqn)
    assert values is not None
    return values


def latest_diagnostics(recorder: TopicRecorder, node_fqn: str) -> dict[str, str]:
    """The key/values of the newest status of ``node_fqn`` recorded so far."""
    found = [values for values in (diagnostic_values(a, node_fqn) for a in recorder.messages) if values is not None]
    assert found, f"no diagnostics of {node_fqn} yet"
    return found[-1]
