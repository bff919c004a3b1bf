"""The node's frame handling, per-camera health, QoS advice and lifecycle stop/start, tested on the node's
own methods in this process: stand-in pipelines and frames where the behaviour is the node's (which
camera's frame failed, what is counted and published), real rclpy lifecycle nodes where it is rclpy's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import QoSPolicyKind
from diagnostic_msgs.msg import DiagnosticStatus

from trt_perception.errors import ImageDecodeError, InferenceError
from trt_perception.image_decoding import DecodedImage
from trt_perception.results import StageTimings
from trt_perception.ros import perception_node
from trt_perception.ros.camera_set import Camera, CameraSlots, CameraStatistics
from trt_perception.ros.cdr import MessageHeader
from trt_perception.ros.lifecycle_node import SegmentationLifecycleNode
from trt_perception.ros.perception_node import PerceptionNode
from trt_perception.ros.statistics import HealthLimits, HealthMonitor, NodeStatistics
from trt_perception.ros.stop_signals import StopRequested
from trt_perception.ros.throttle import MessageThrottle

# A pixel value that makes the stand-in pipeline fail the way a real one does on such a frame.
NAN_OUTPUT = 7
UNREADABLE = 9


class StandInPipeline:
    """Fails a whole ``run_batch`` when any of its images is marked, as a network with a NaN output or
    an input it cannot take would; records the batch sizes it was given."""

    batch_capacity = None
    device = "cpu"
    backend = SimpleNamespace(name="stand-in")

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run_batch(self, images: Sequence[tuple[np.ndarray, str]]) -> list[Any]:
        self.batches.append(len(images))
        for pixels, _ in images:
            if pixels[0, 0, 0] == NAN_OUTPUT:
                raise InferenceError("output 'scores' has NaN values")
            if pixels[0, 0, 0] == UNREADABLE:
                raise ImageDecodeError("the model takes 3 channels")
        return [SimpleNamespace(timings=StageTimings({"inference": 1.0}), value=int(pixels[0, 0, 0])) for pixels, _ in images]


class StandInNode(PerceptionNode):
    """Only what processing and diagnostics use; no ROS node behind it."""

    task = "segmentation"

    def __init__(self, camera_names: Sequence[str], limits: HealthLimits = HealthLimits()) -> None:  # noqa: B008
        self.pipeline = StandInPipeline()
        self.spec = SimpleNamespace(name="stand_in")
        self._settings = {
            "lazy": False, "diagnostics_period": 1.0, "input_reliability": "auto", "use_compressed": False
        }
        self._throttle = MessageThrottle(period=0.0)
        self._foreign_input_types: dict[str, tuple[str, ...]] = {}
        self._stats = NodeStatistics()
        self._cameras = [
            Camera(name, index, {}, CameraStatistics(self._stats, len(camera_names) > 1), HealthMonitor(limits))
            for index, name in enumerate(camera_names)
        ]
        for camera in self._cameras:
            camera.input_topic = f"/{camera.name or 'camera'}/image"
        self._input_topic = ", ".join(camera.input_topic for camera in self._cameras)
        self.published: list[tuple[str, int]] = []
        self.logged: list[str] = []
        self.publisher_counts: dict[str, int] = {}
        self.unpublishable: set[str] = set()  # cameras whose publishing raises
        self._stopping = False

    def publish_results(self, outputs: Any, header: MessageHeader, image: Any, result: Any, settings: Any) -> None:
        if header.frame_id in self.unpublishable:
            raise RuntimeError(f"publisher of {header.frame_id} was destroyed")
        self.published.append((header.frame_id, result.value))

    def log_problem(self, message: str) -> None:
        self.logged.append(message)

    def get_publishers_info_by_topic(self, topic: str) -> list[Any]:
        return [SimpleNamespace(topic_type="sensor_msgs/msg/Image")] * self.publisher_counts.get(topic, 0)

    def get_fully_qualified_name(self) -> str:
        return "/stand_in"


def frame_of(camera: Camera, value: int) -> tuple[Camera, Any]:
    pixels = np.full((4, 6, 3), value, np.uint8)
    return camera, lambda: (MessageHeader(1, 0, camera.name), DecodedImage(pixels, "RGB"))


def counts(camera: Camera) -> tuple[int, int, int]:
    own = camera.stats.own
    return own.processed, own.failed, own.bad_input


@pytest.mark.parametrize("failing", [0, 1, 2])
def test_a_frame_failing_inference_costs_only_its_own_camera(failing: int) -> None:
    node = StandInNode(["front", "rear", "left"])
    values = [10, 20, 30]
    values[failing] = NAN_OUTPUT
    node._process([frame_of(camera, value) for camera, value in zip(node._cameras, values)])
    # the batch failed as a whole, then each camera's frame ran alone
    assert node.pipeline.batches == [3, 1, 1, 1]
    assert node.published == [(camera.name, value) for camera, value in zip(node._cameras, values) if value != NAN_OUTPUT]
    for index, camera in enumerate(node._cameras):
        assert counts(camera) == ((0, 1, 0) if index == failing else (1, 0, 0))
    assert (node._stats.processed, node._stats.failed, node._stats.bad_input) == (2, 1, 0)
    assert node.logged == ["inference failed: output 'scores' has NaN values"]


def test_an_input_the_model_refuses_counts_as_bad_input_of_its_camera_only() -> None:
    node = StandInNode(["front", "rear"])
    node._process([frame_of(node._cameras[0], UNREADABLE), frame_of(node._cameras[1], 20)])
    assert node.published == [("rear", 20)]
    assert [counts(camera) for camera in node._cameras] == [(0, 0, 1), (1, 0, 0)]
    assert node.logged == ["skipped bad input image: the model takes 3 channels"]


def test_a_whole_batch_that_runs_is_published_once_per_camera() -> None:
    node = StandInNode(["front", "rear"])
    node._process([frame_of(node._cameras[0], 10), frame_of(node._cameras[1], 20)])
    assert node.pipeline.batches == [2]
    assert node.published == [("front", 10), ("rear", 20)]
    assert [counts(camera) for camera in node._cameras] == [(1, 0, 0), (1, 0, 0)]


@pytest.mark.parametrize("failing", [0, 1, 2])
def test_a_camera_whose_results_cannot_be_published_costs_only_itself(failing: int) -> None:
    node = StandInNode(["front", "rear", "left"])
    node.unpublishable = {node._cameras[failing].name}
    node._process([frame_of(camera, value) for camera, value in zip(node._cameras, [10, 20, 30])])
    assert node.pipeline.batches == [3]
    assert node.published == [(camera.name, value) for index, (camera, value) in
                              enumerate(zip(node._cameras, [10, 20, 30])) if index != failing]
    for index, camera in enumerate(node._cameras):
        assert counts(camera) == ((0, 1, 0) if index == failing else (1, 0, 0))
    assert node.logged == [f"publishing results failed: RuntimeError: publisher of {node._cameras[failing].name} was destroyed"]


def status_by_name(statuses: Sequence[DiagnosticStatus]) -> dict[str, DiagnosticStatus]:
    return {status.name: status for status in statuses}


def test_a_stalled_camera_is_flagged_in_its_own_status_and_the_node_takes_the_worst_level() -> None:
    node = StandInNode(["front", "rear"], HealthLimits(stall_seconds=0.2))
    node.publisher_counts = {"/front/image": 1, "/rear/image": 1}
    time.sleep(0.3)
    node._cameras[0].stats.frame_received()  # front delivers, rear's publisher sends nothing
    statuses = status_by_name(node.diagnostic_statuses())
    front, rear = statuses["/stand_in: segmentation camera front"], statuses["/stand_in: segmentation camera rear"]
    assert (front.level, front.message) == (DiagnosticStatus.OK, "running")
    assert rear.level == DiagnosticStatus.ERROR
    assert rear.message.startswith("no frame for ") and rear.message.endswith(" s while 1 publishers exist")
    whole = statuses["/stand_in: segmentation"]
    assert whole.level == DiagnosticStatus.ERROR
    assert whole.message == f"camera rear: {rear.message}"


def test_a_camera_without_publishers_is_not_stalled_and_a_recent_error_warns_its_camera_only() -> None:
    node = StandInNode(["front", "rear"], HealthLimits(stall_seconds=0.2))
    node.publisher_counts = {"/front/image": 1}
    time.sleep(0.3)
    for _ in range(3):
        node._cameras[0].stats.frame_received()
    node._cameras[0].stats.frame_failed("inference failed: NaN", bad_input=False)  # 1 of 3: under max_lost_share
    statuses = status_by_name(node.diagnostic_statuses())
    front, rear = statuses["/stand_in: segmentation camera front"], statuses["/stand_in: segmentation camera rear"]
    assert (front.level, front.message) == (DiagnosticStatus.WARN, "last error: inference failed: NaN")
    assert (rear.level, rear.message) == (DiagnosticStatus.OK, "running")
    whole = statuses["/stand_in: segmentation"]
    assert (whole.level, whole.message) == (DiagnosticStatus.WARN, "camera front: last error: inference failed: NaN")


def test_the_expected_input_rate_applies_to_each_camera_not_to_their_sum() -> None:
    node = StandInNode(["front", "rear"], HealthLimits(min_rate_hz=10.0, max_rate_hz=80.0))
    node.publisher_counts = {"/front/image": 1, "/rear/image": 1}
    for _ in range(10):  # both cameras at about 50 Hz: together about 100 Hz
        for camera in node._cameras:
            camera.stats.frame_received()
        time.sleep(0.02)
    statuses = node.diagnostic_statuses()
    assert [(status.level, status.message) for status in statuses] == [(DiagnosticStatus.OK, "running")] * 3


def test_a_single_unnamed_camera_has_only_the_node_status() -> None:
    node = StandInNode([""], HealthLimits(stall_seconds=0.2))
    node.publisher_counts = {"/camera/image": 2}
    time.sleep(0.3)
    [status] = node.diagnostic_statuses()
    assert status.name == "/stand_in: segmentation"
    assert status.level == DiagnosticStatus.ERROR
    assert status.message.startswith("no frame for ") and status.message.endswith(" s while 2 publishers exist")


class RecordingLogger:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, text: str) -> None:
        self.warnings.append(text)


@pytest.mark.parametrize("reliability", ["auto", "reliable"])
def test_incompatible_qos_advice_fits_the_input_reliability(monkeypatch: pytest.MonkeyPatch, reliability: str) -> None:
    node = StandInNode(["front"])
    node._settings = {**node._settings, "input_reliability": reliability}
    logger = RecordingLogger()
    monkeypatch.setattr(node, "get_logger", lambda: logger)
    monkeypatch.setattr(node, "resolve_topic_name", lambda topic: f"/{topic}")
    node._warn_incompatible_qos("front/image", SimpleNamespace(last_policy_kind=QoSPolicyKind.RELIABILITY.value), "input_reliability")
    [text] = logger.warnings
    assert text.startswith("a peer of /front/image has QoS incompatible with this node's (policy RELIABILITY)")
    if reliability == "auto":
        assert "set input_reliability:=auto" not in text
        assert text.endswith("This node uses input_reliability='auto' and re-subscribes to match the topic's "
                             "publishers within 1 s; no action needed unless this repeats")
    else:
        assert text.endswith("This node uses input_reliability='reliable'; fix: set input_reliability:=auto "
                             "(matches the camera) or best_effort, or make the camera reliable")


@pytest.fixture
def ros() -> Iterator[None]:
    rclpy.init(args=["--ros-args", "-p", "cameras:=[front, rear]"])
    try:
        yield
    finally:
        rclpy.shutdown()


class TimedPipeline(StandInPipeline):
    """Records the thread each frame ran on; a frame of value ``slow_value`` takes ``slow_seconds``,
    one of value ``held_value`` waits until ``release`` is set, one of ``interrupted_value`` raises
    StopRequested as a stop signal would."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: dict[int, int] = {}
        self.slow_value, self.slow_seconds = -1, 0.0
        self.held_value, self.release, self.holding = -1, threading.Event(), threading.Event()
        self.interrupted_value = -1

    def run_batch(self, images: Sequence[tuple[np.ndarray, str]]) -> list[Any]:
        for pixels, _ in images:
            value = int(pixels[0, 0, 0])
            self.threads[value] = threading.get_ident()
            if value == self.slow_value:
                time.sleep(self.slow_seconds)
            if value == self.held_value:
                self.holding.set()
                assert self.release.wait(10.0)
            if value == self.interrupted_value:
                raise StopRequested()
        return super().run_batch(images)


@pytest.fixture
def inline_node() -> Iterator[StandInNode]:
    """A one-camera stand-in node with ``inline_processing`` on and its worker running."""
    node = StandInNode([""])
    node.pipeline = TimedPipeline()
    node._settings = {**node._settings, "inline_processing": True}
    node.get_name = lambda: "stand_in"  # type: ignore[method-assign]
    node._start_worker()
    yield node
    node.pipeline.release.set()
    assert node.stop(5.0) or node._inline_interrupted  # that one is refused by design (the test's subject)


def receive(node: StandInNode, value: int, size: int = 921_654, received_ns: int | None = None) -> None:
    """A frame of ``value`` as the subscription callback hands it over (message bytes, DDS reception time)."""
    camera, frame = frame_of(node._cameras[0], value)
    node._receive(camera, frame, size, time.time_ns() if received_ns is None else received_ns)


def wait_published(node: StandInNode, count: int) -> None:
    deadline = time.monotonic() + 5.0
    while len(node.published) < count:
        assert time.monotonic() < deadline, node.published
        time.sleep(0.001)


def test_a_quick_frame_that_finds_the_node_idle_is_processed_in_the_callback(inline_node: StandInNode) -> None:
    node, caller = inline_node, threading.get_ident()
    receive(node, 10)  # nothing known of this size yet: the worker
    wait_published(node, 1)
    receive(node, 11)  # same size, the last one was quick, the node idle: here, before returning
    assert node.published == [("", 10), ("", 11)]
    assert node.pipeline.threads[10] != caller and node.pipeline.threads[11] == caller
    receive(node, 12, size=1000)  # another size (another resolution or encoding): the worker again
    wait_published(node, 3)
    assert node.pipeline.threads[12] != caller
    assert node._stats.processed == 3 and node._stats.dropped == 0


def test_frames_that_waited_while_one_was_processed_go_to_the_worker_newest_only(inline_node: StandInNode) -> None:
    node, caller = inline_node, threading.get_ident()
    receive(node, 10)
    wait_published(node, 1)
    node.pipeline.held_value = 20
    receive(node, 20, received_ns=node._idle_since_ns - 1)  # received before the node became idle
    assert node.pipeline.holding.wait(5.0)  # the worker is inside it
    idle_before = node._idle_since_ns
    for value in (21, 22, 23):  # arrive while the worker is busy: wait in the slot, newest wins
        receive(node, value)
    assert node.published == [("", 10)]
    node.pipeline.release.set()
    wait_published(node, 3)
    assert node.published == [("", 10), ("", 20), ("", 23)]  # in order, 21 and 22 replaced
    assert node._stats.dropped == 2 and node._idle_since_ns > idle_before
    assert caller not in (node.pipeline.threads[20], node.pipeline.threads[23])


def test_a_slow_frame_sends_the_next_one_to_the_worker(inline_node: StandInNode) -> None:
    node, caller = inline_node, threading.get_ident()
    receive(node, 10)
    wait_published(node, 1)
    node.pipeline.slow_value, node.pipeline.slow_seconds = 11, perception_node.INLINE_MAX_SECONDS + 0.02
    receive(node, 11)  # quick so far: here, and slow
    assert node.pipeline.threads[11] == caller
    receive(node, 12)  # after a slow frame a stop signal could wait as long: the worker
    wait_published(node, 3)
    assert node.pipeline.threads[12] != caller
    receive(node, 13)  # 12 was quick again
    assert node.pipeline.threads[13] == caller


def test_stop_waits_for_a_frame_a_callback_processes_in_another_thread(inline_node: StandInNode) -> None:
    # as under a MultiThreadedExecutor: the callback's thread is not the one that stops the node
    node = inline_node
    receive(node, 10)
    wait_published(node, 1)
    node.pipeline.held_value = 11
    callback = threading.Thread(target=receive, args=(node, 11))
    callback.start()
    assert node.pipeline.holding.wait(5.0)
    assert not node.stop(0.2)  # the model must not be released under that frame
    node.pipeline.release.set()
    callback.join(5.0)
    assert node.stop(0.0) and node.published == [("", 10), ("", 11)]


def test_a_frame_never_overtakes_one_the_worker_has_waiting(inline_node: StandInNode) -> None:
    node, caller = inline_node, threading.get_ident()
    receive(node, 10)
    wait_published(node, 1)
    gate, wait = threading.Event(), node._slot.wait

    def gated_wait(timeout: float | None = None) -> bool:
        gate.wait(10.0)
        return wait(timeout)

    node._slot.wait = gated_wait  # type: ignore[method-assign]
    time.sleep(0.6)  # the worker's current wait (0.5 s) ends, the next one stops at the gate
    camera, frame = frame_of(node._cameras[0], 11)
    node._slot.put(camera.index, (frame, 921_654))  # as if 11 had arrived while the node was busy
    receive(node, 12)  # idle and quick, but 11 waits: 12 replaces it in the slot, no inline run
    assert node.published == [("", 10)] and node._stats.dropped == 1
    gate.set()
    wait_published(node, 2)
    assert node.published == [("", 10), ("", 12)] and node.pipeline.threads[12] != caller


def test_no_frame_runs_inline_once_the_node_stops(inline_node: StandInNode) -> None:
    node = inline_node
    receive(node, 10)
    wait_published(node, 1)
    assert node.stop(1.0)
    receive(node, 11)  # a callback already under way when the node stopped (another executor thread)
    assert node.published == [("", 10)] and 11 not in node.pipeline.threads


def test_skipped_frames_say_nothing_of_how_long_the_next_one_takes(inline_node: StandInNode) -> None:
    node, caller = inline_node, threading.get_ident()
    node._settings = {**node._settings, "lazy": True}  # the stand-in has no listeners: every frame skipped
    receive(node, 10)
    deadline = time.monotonic() + 5.0
    while node._stats.skipped_no_subscribers < 1:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    receive(node, 11)  # skipped quickly, still the size is not known to be quick
    node._settings = {**node._settings, "lazy": False}
    node.pipeline.slow_value, node.pipeline.slow_seconds = 12, 0.2  # a first inference, slow
    receive(node, 12)
    wait_published(node, 1)
    assert caller not in node.pipeline.threads.values()


def test_a_stop_signal_inside_an_inline_frame_keeps_the_model(inline_node: StandInNode) -> None:
    node, caller = inline_node, threading.get_ident()
    receive(node, 10)
    wait_published(node, 1)
    node.pipeline.interrupted_value = 11
    with pytest.raises(StopRequested):
        receive(node, 11)
    assert node.pipeline.threads[11] == caller
    assert not node.stop(1.0)  # the backend may still be inside that frame: not released


@pytest.mark.parametrize("setting", ["compressed", "inline_processing false", "two cameras", "rmw_cyclonedds_cpp"])
def test_frames_go_to_the_worker_without_inline_processing(setting: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # rmw_cyclonedds_cpp stamps received_timestamp when the message is taken, not received: a backlog
    # would look like frames that found the node idle
    monkeypatch.setattr(rclpy, "get_rmw_implementation_identifier", lambda: setting if setting.startswith("rmw") else "rmw_fastrtps_cpp")
    node = StandInNode(["front", "rear"] if setting == "two cameras" else [""])
    node._settings = {**node._settings, "inline_processing": setting != "inline_processing false"}
    node.get_name = lambda: "stand_in"  # type: ignore[method-assign]
    node._start_worker()
    try:
        caller, size = threading.get_ident(), -1 if setting == "compressed" else 100
        seen: list[int] = []
        run_batch = node.pipeline.run_batch

        def recording(images: Sequence[tuple[np.ndarray, str]]) -> list[Any]:
            seen.append(threading.get_ident())
            return run_batch(images)

        node.pipeline.run_batch = recording  # type: ignore[method-assign]
        for count, value in enumerate((10, 11, 12), start=1):
            camera, frame = frame_of(node._cameras[0], value)
            node._receive(camera, frame, size, time.time_ns())
            wait_published(node, count)
        assert caller not in seen and len(seen) == 3
    finally:
        assert node.stop(5.0)


def test_dds_reception_times_are_on_the_clock_the_node_compares_them_with(ros_context: Any) -> None:
    # inline_processing compares a message's reception time (Fast DDS, via rclpy's MessageInfo) with
    # time.time_ns() taken when the node went idle: both must be the system clock
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    node = rclpy.create_node("reception_clock", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        times: list[tuple[int, int]] = []
        publisher = node.create_publisher(Image, "/reception_clock/image", 10)
        node.create_subscription(
            Image, "/reception_clock/image", lambda _, info: times.append((info["received_timestamp"], time.time_ns())),
            10, raw=True,
        )
        deadline = time.monotonic() + 10.0
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        sent = time.time_ns()
        publisher.publish(Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(640 * 480 * 3)))
        time.sleep(0.2)  # nobody takes the message meanwhile: its stamp must be the reception, not the take
        taking = time.time_ns()
        while not times and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        [(received, handled)] = times
        assert sent <= received < taking <= handled, (sent, received, taking, handled)
    finally:
        executor.shutdown()
        node.destroy_node()


def image_subscriptions(node: PerceptionNode) -> list[str]:
    return sorted(subscription.topic_name for subscription in node.subscriptions if subscription.topic_name.endswith("/image"))


def test_deactivate_fails_while_a_frame_is_running_and_keeps_the_worker(ros: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perception_node, "DEACTIVATE_TIMEOUT", 0.2)
    node = SegmentationLifecycleNode()
    try:
        # active, with the worker inside a long frame
        frame_done = threading.Event()
        node._slot = CameraSlots(2)
        node._processing = threading.Lock()
        node._inline_interrupted = False
        node._stopping = False
        node._worker = threading.Thread(target=frame_done.wait, daemon=True)
        node._worker.start()
        node._diagnostics_timer = node.create_timer(60.0, lambda: None)
        node._qos_timer = None
        worker = node._worker
        assert node.on_deactivate(None) == TransitionCallbackReturn.FAILURE
        assert node._worker is worker and worker.is_alive()  # kept: the model must not be released under it
        assert len(list(node.timers)) == 1
        frame_done.set()
        worker.join(5.0)
        assert node.on_deactivate(None) == TransitionCallbackReturn.SUCCESS
        assert not hasattr(node, "_worker")
        assert list(node.timers) == []
    finally:
        node.destroy_node()


def test_a_failed_activate_leaves_no_subscription_or_timer(ros: None, monkeypatch: pytest.MonkeyPatch) -> None:
    node = SegmentationLifecycleNode()
    try:
        subscribe = node._subscribe

        def subscribe_front_only(camera: Camera) -> Any:
            if camera.name == "rear":
                raise RuntimeError("cannot subscribe")
            return subscribe(camera)

        monkeypatch.setattr(node, "_subscribe", subscribe_front_only)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        # the exception makes the transition an error: on_error undoes what activation did
        assert node.trigger_activate() == TransitionCallbackReturn.ERROR
        assert image_subscriptions(node) == []
        assert list(node.timers) == []
        assert not hasattr(node, "pipeline")
    finally:
        node.destroy_node()
