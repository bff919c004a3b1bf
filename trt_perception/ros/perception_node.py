"""Shared base of the segmentation and detection nodes.

The glue between a camera topic and ``Pipeline``: parameters (declared with descriptors, validated,
thresholds and output switches changeable at run time), QoS, newest-frame-only processing (a frame
that finds the node idle right in its subscription callback, the others on a worker thread; older
frames are dropped and counted, never queued), lazy work while nobody listens,
diagnostics on ``/diagnostics``, throttled warnings for bad frames, a fatal error naming the model
path when the model cannot be loaded, and shutdown on SIGINT/SIGTERM without a traceback.
Subclasses declare their outputs and turn pipeline results into messages.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo

from trt_perception.errors import GpuUnavailableError, ImageDecodeError, InferenceError, TrtPerceptionError
from trt_perception.image_decoding import DecodedImage, encode_image
from trt_perception.pipeline_factory import create_pipeline
from trt_perception.ros.cdr import MessageHeader, parse_compressed_image, parse_header, parse_image, serialize_image
from trt_perception.ros.camera_set import Camera, CameraSlots, CameraStatistics, camera_names_problem, camera_topic
from trt_perception.ros.dds_profile import use_large_images_profile
from trt_perception.ros.image_conversion import (
    compressed_image_from_msg,
    image_from_msg,
    tune_malloc_for_large_messages,
)
from trt_perception.ros.messages import diagnostic_status, label_info
from trt_perception.ros.parameters import COMMON_PARAMETERS, ParameterDefinition, check_value
from trt_perception.ros.statistics import Health, HealthLimits, HealthMonitor, NodeStatistics, StatisticsReport
from trt_perception.ros.stop_signals import StopRequested, install_stop_signals
from trt_perception.ros.throttle import MessageThrottle, one_line, quote_limited
from trt_perception.row_bands import limit_bands
from trt_perception.spec import ModelSpec, load_model_spec

try:
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

Settings = Mapping[str, Any]

# Errors that end the node at start-up with one clear line instead of a traceback: a bad model
# spec or model file, a parameter value rejected by its type, range or validation, a topic name that
# the namespace, node name and cameras cannot make (e.g. too long for DDS).
STARTUP_ERRORS: tuple[type[Exception], ...] = (TrtPerceptionError, ParameterException, NameValidationException)

LABEL_INFO_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
RCLError = _rclpy.RCLError
RMWError = _rclpy.RMWError
# Seconds the executor waits per turn: the longest a stop signal may wait for the main loop.
SPIN_TIMEOUT = 0.25
# Seconds a stopping node waits for the frame in progress before abandoning it.
WORKER_STOP_TIMEOUT = 2.0
# Seconds ``stop_processing`` (lifecycle deactivate) waits for the frames in hand.
DEACTIVATE_TIMEOUT = 10.0
# Seconds between log lines about the same kind of failing callback.
CALLBACK_ERROR_PERIOD = 5.0
DIAGNOSTIC_LEVELS = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN, "ERROR": DiagnosticStatus.ERROR}
# Seconds between checks of the input publishers' QoS (input_reliability: auto).
QOS_MATCH_PERIOD = 1.0
QOS_FIXES = {
    "input_reliability": "set input_reliability:=auto (matches the camera) or best_effort, or make the camera reliable",
    "output_reliability": "set output_reliability:=reliable (serves reliable and best-effort subscribers)",
}
RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
# The message type the input subscription reads, by use_compressed; publishers of another type cannot deliver.
INPUT_TYPES = {False: "sensor_msgs/msg/Image", True: "sensor_msgs/msg/CompressedImage"}
# The QoS of images and results other than reliability and depth (not parameters): what a peer must accept.
QOS_FIXED = "volatile durability, no deadline, automatic liveliness"


# A received image, read where it is processed: returns the message header and the decoded pixels.
FrameReader = Callable[[], tuple[MessageHeader, DecodedImage]]
# Seconds a frame may have taken for the next one of the same size to be processed in the executor's
# thread (inline_processing): parameters, services and timers wait at most about this long.
INLINE_MAX_SECONDS = 0.05
# rmw layers whose MessageInfo ``received_timestamp`` is when DDS received the message (system clock),
# which inline_processing needs; others stamp the take (rmw_cyclonedds_cpp) or nothing (0), and
# their frames always go to the worker.
RECEPTION_STAMPING_RMW = frozenset({"rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"})
# rclpy passes MessageInfo to two-argument subscription callbacks from Iron on (not Humble).
CALLBACKS_TAKE_MESSAGE_INFO = hasattr(Subscription, "CallbackType")


def read_serialized_image(data: bytes, max_pixels: int) -> tuple[MessageHeader, DecodedImage]:
    """Header and pixels (a view of ``data``) of a serialized ``sensor_msgs/Image``."""
    image = parse_image(data)
    return image.header, image.decode(max_pixels)


def read_serialized_compressed(data: bytes, max_pixels: int) -> tuple[MessageHeader, DecodedImage]:
    """Header and decoded pixels of a serialized ``sensor_msgs/CompressedImage``."""
    image = parse_compressed_image(data)
    return image.header, image.decode(max_pixels)


def deserialized(data: bytes, message_type: type) -> Any:
    """An rclpy message from its serialized bytes; ImageDecodeError when rclpy cannot read them."""
    try:
        return deserialize_message(data, message_type)
    except RMWError as error:
        raise ImageDecodeError(f"malformed serialized {message_type.__name__}: {error}") from None


def read_image_message(data: bytes, max_pixels: int) -> tuple[MessageHeader, DecodedImage]:
    """Header and pixels (a view of the message's data) of a ``sensor_msgs/Image`` read by rclpy
    (the header by ``cdr.parse_header``: rclpy would replace bytes of a frame id that are not UTF-8)."""
    message = deserialized(data, Image)
    return parse_header(data, "sensor_msgs/Image"), image_from_msg(message, max_pixels)


def read_compressed_message(data: bytes, max_pixels: int) -> tuple[MessageHeader, DecodedImage]:
    """Header and decoded pixels of a ``sensor_msgs/CompressedImage`` read by rclpy (the header as
    ``read_image_message`` reads it)."""
    message = deserialized(data, CompressedImage)
    return parse_header(data, "sensor_msgs/CompressedImage"), compressed_image_from_msg(message, max_pixels)


def use_opencv_threads(count: int) -> None:
    """OpenCV's own thread pool at ``count`` threads with the row bands kept at one per core; 0:
    OpenCV's default, the bands following it. Process-wide.

    Measured on the 2-core development VM (bench/bench_transport_e2e.py, the selfie model at
    640x480): with OpenCV's pool, a small call such as the labels' horizontal resize waited for
    OpenCV's worker to wake up behind ONNX Runtime's threads, 0.4-1.1 ms per frame instead of 0.2."""
    if count == 0:
        limit_bands(None)
        cv2.setNumThreads(-1)  # OpenCV: a negative count restores its default
        return
    limit_bands(cv2.getNumberOfCPUs())  # cores this process may use (CPU quotas included), as OpenCV counts them
    cv2.setNumThreads(count)


def volatile_qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last, volatile QoS with the given reliability name (``best_effort`` | ``reliable``)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=RELIABILITY[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )


def _path(text: str) -> Path:
    return Path(text).expanduser().resolve()


def with_overrides(spec: ModelSpec, settings: Settings) -> ModelSpec:
    """The spec with the node's ``model_path`` / ``engine_path`` / ``backend`` and TensorRT ``precision`` /
    ``calibration_images`` / ``calibration_cache`` parameters applied (empty: keep the spec's)."""
    changes: dict[str, Any] = {}
    if settings["model_path"]:
        changes["model"] = _path(settings["model_path"])
    if settings["engine_path"]:
        changes["engine"] = _path(settings["engine_path"])
    if settings["backend"]:
        changes["backend"] = settings["backend"]
    tensorrt = spec.tensorrt
    if settings["precision"]:
        tensorrt = replace(tensorrt, precision=settings["precision"])
    if settings["calibration_images"]:
        tensorrt = replace(tensorrt, calibration_images=_path(settings["calibration_images"]))
    if settings["calibration_cache"]:
        tensorrt = replace(tensorrt, calibration_cache=_path(settings["calibration_cache"]))
    if tensorrt.precision == "int8" and tensorrt.calibration_images is None and tensorrt.calibration_cache is None:
        raise TrtPerceptionError(
            "precision 'int8' needs the parameter calibration_images (a folder of camera-like images) or "
            "calibration_cache (an existing calibration cache), or the spec's tensorrt section naming one"
        )
    return replace(spec, tensorrt=tensorrt, **changes)


@dataclass(frozen=True)
class OutputTopic:
    """A result topic of each camera: ``~/<name>`` (``~/<camera>/<name>``), enabled by the bool parameter ``switch``."""

    name: str
    message_type: type
    switch: str


@dataclass(frozen=True)
class CameraFrame:
    """A camera's frame read for inference, with the milliseconds reading took."""

    camera: Camera
    header: MessageHeader
    image: DecodedImage
    decode_ms: float


def health_level(problems: Sequence[Health]) -> tuple[bytes, str]:
    """Diagnostic level (the most severe problem's; OK without problems) and message (the problems, or "running")."""
    level = max((DIAGNOSTIC_LEVELS[problem.level] for problem in problems), default=DiagnosticStatus.OK)
    return level, "; ".join(problem.message for problem in problems) if problems else "running"


def descriptor_of(definition: ParameterDefinition) -> ParameterDescriptor:
    """The ROS parameter descriptor: description, constraints, read-only flag and numeric range."""
    descriptor = ParameterDescriptor(
        description=definition.description,
        additional_constraints=definition.constraints,
        read_only=not definition.runtime,
    )
    if definition.minimum is not None and definition.maximum is not None:
        if isinstance(definition.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(definition.minimum), to_value=float(definition.maximum), step=0.0)
            ]
        elif isinstance(definition.default, int) and not isinstance(definition.default, bool):
            descriptor.integer_range = [
                IntegerRange(from_value=int(definition.minimum), to_value=int(definition.maximum), step=1)
            ]
    return descriptor


class PerceptionNode(Node):
    """Subscribes to ``image`` (or ``image/compressed``), runs the model spec's pipeline on the newest frame."""

    task = ""  # "segmentation" | "detection", set by subclasses
    output_topics: tuple[OutputTopic, ...] = ()  # result topics of each camera, set by subclasses
    managed = False  # lifecycle variants: configured and started by lifecycle transitions, not at construction

    def __init__(self, node_name: str, default_model_spec: str) -> None:
        super().__init__(node_name)
        self._cameras: list[Camera] = []
        self._definitions: dict[str, ParameterDefinition] = {}
        self._settings: Settings = {}
        self._running = False  # set once the pipeline and outputs exist: from then on changes are applied
        self._foreign_input_types: dict[str, tuple[str, ...]] = {}  # input topic -> other types last reported
        self._throttle = MessageThrottle(period=0.0)  # period set from warning_period when declared
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._declare(COMMON_PARAMETERS, {"model_spec": default_model_spec})
        if not self.managed:
            self.configure_pipeline()
            self.start_processing()

    # ---- start and stop (a managed node runs these from its lifecycle transitions) -----------
    def configure_pipeline(self) -> None:
        """Load the model spec and the model (a TensorRT engine is loaded or built) and create the
        outputs; a bad spec, model or parameter raises one of ``STARTUP_ERRORS``."""
        use_opencv_threads(self._settings["opencv_threads"])
        spec_name = self._settings["model_spec"]
        spec = load_model_spec(spec_name)
        self.spec = with_overrides(spec, self._settings)
        if self.spec.task != self.task:
            raise TrtPerceptionError(
                f"model spec {spec.source or spec_name} is for {self.spec.task}, but this is the {self.task} node"
            )
        self.class_names: Sequence[str] | None = self.spec.labels
        self._declare([definition for definition in self.task_parameters() if definition.name not in self._definitions], {})
        self.spec = self.adjust_spec(self.spec)
        camera_names = list(self._settings["cameras"] or ())
        problem = camera_names_problem(camera_names)
        if problem is not None:
            raise TrtPerceptionError(problem)
        device = self._settings["processing_device"]
        try:
            self.pipeline = create_pipeline(
                self.spec, intra_op_threads=self._settings["intra_op_threads"], device=device
            )
        except GpuUnavailableError as error:
            raise GpuUnavailableError(f"processing_device {device!r}: {error}") from error

        self._stats = NodeStatistics()
        limits = HealthLimits(
            min_rate_hz=self._settings["input_rate_min_hz"], max_rate_hz=self._settings["input_rate_max_hz"],
            stall_seconds=self._settings["stall_timeout"], max_lost_share=self._settings["max_lost_share"],
        )
        self._stopping = False

        output_qos = volatile_qos(self._settings["output_reliability"], self._settings["output_depth"])
        self._cameras = [
            Camera(
                name, index, self._create_outputs(name, output_qos), CameraStatistics(self._stats, bool(camera_names)),
                HealthMonitor(limits),
            )
            for index, name in enumerate(camera_names or [""])
        ]
        self._label_info = self.create_output_publisher(LabelInfo, "~/label_info", LABEL_INFO_QOS)
        self.settings_changed(self._settings)
        self._running = True
        self._diagnostics = self.create_output_publisher(DiagnosticArray, "/diagnostics", 10)

    def start_processing(self) -> None:
        """Publish ``~/label_info``, subscribe to the camera(s), start the worker and the diagnostics."""
        self.publish_label_info()
        self._diagnostics_timer = self.create_timer(self._settings["diagnostics_period"], self._publish_diagnostics)
        self._start_worker()
        # auto: best effort (accepts every publisher) until publishers are seen, then what they offer
        auto = self._settings["input_reliability"] == "auto"
        for camera in self._cameras:
            camera.reliability = "best_effort" if auto else self._settings["input_reliability"]
            camera.subscription = self._subscribe(camera)
            camera.input_topic = camera.subscription.topic_name
        self._input_topic = ", ".join(camera.input_topic for camera in self._cameras)
        self._qos_timer = self.create_timer(QOS_MATCH_PERIOD, self._match_input_qos) if auto else None
        if auto:
            self._match_input_qos()
        self.get_logger().info(
            f"{self.spec.name} ({self.task}, backend {self.pipeline.backend.name}, "
            f"{self.pipeline.device} pre/post-processing) on {self._input_topic}"
        )

    def _start_worker(self) -> None:
        """The cameras' newest-frame slots, the processing lock and the worker thread."""
        self._stopping = False
        self._slot: CameraSlots[tuple[FrameReader, int]] = CameraSlots(len(self._cameras))  # (frame, bytes)
        # Held while frames are processed, by the worker or by a subscription callback (inline).
        self._processing = threading.Lock()
        self._idle_since_ns = time.time_ns()
        self._quick_frame_size = -1  # message bytes of the last frame if it was quick (inline_processing)
        self._inline_interrupted = False  # a BaseException (stop signal) left an inline frame half done
        # One camera only: several share batches, which the worker assembles from the slots.
        self._inline = (
            self._settings["inline_processing"] and len(self._cameras) == 1 and CALLBACKS_TAKE_MESSAGE_INFO
            and rclpy.get_rmw_implementation_identifier() in RECEPTION_STAMPING_RMW
        )
        self._batch_limit = self.pipeline.batch_capacity  # cameras per inference (None: all waiting)
        self._worker = threading.Thread(target=self._work, name=f"{self.get_name()}_worker", daemon=True)
        self._worker.start()

    def stop_processing(self) -> bool:
        """Unsubscribe, stop the worker (it finishes the frames in hand) and the diagnostics; whether the
        frames in progress ended (``stop``). Undoes as much of ``start_processing`` as was done (also
        after it failed half-way); a worker still inside a frame after the wait is kept, so the model
        must not be released."""
        for camera in self._cameras:
            if camera.subscription is not None:
                self.destroy_subscription(camera.subscription)
                camera.subscription = None
        if not self.stop(timeout=DEACTIVATE_TIMEOUT):
            return False
        if hasattr(self, "_worker"):
            del self._worker
        for name in ("_diagnostics_timer", "_qos_timer"):
            timer = getattr(self, name, None)
            if timer is not None:
                self.destroy_timer(timer)
                setattr(self, name, None)
        return True

    def release_pipeline(self) -> None:
        """Destroy the outputs and release the model (the backend's session or engine and its memory)."""
        self._running = False
        for camera in self._cameras:
            for publisher in camera.outputs.values():
                self.destroy_output_publisher(publisher)
        self._cameras = []
        self.destroy_output_publisher(self._label_info)
        self.destroy_output_publisher(self._diagnostics)
        self.pipeline.close()
        del self.pipeline

    # ---- hooks for subclasses -------------------------------------------------------------
    def task_parameters(self) -> Sequence[ParameterDefinition]:
        """Parameters of the task; defaults may come from ``self.spec``."""
        raise NotImplementedError

    def adjust_spec(self, spec: ModelSpec) -> ModelSpec:
        """The spec with start-up task parameters applied (before the model is loaded)."""
        return spec

    def check_setting(self, name: str, value: Any) -> str | None:
        """Task-specific validation beyond type and range; the reason a value is rejected, or ``None``."""
        return None

    def settings_changed(self, changes: Settings) -> None:
        """Bring the pipeline up to date with changed settings (from the parameter callback, once at
        start-up with all settings); ``self._settings`` holds the new values already."""

    def publish_results(
        self, outputs: Mapping[str, Publisher], header: MessageHeader, image: DecodedImage, result: Any, settings: Settings
    ) -> str | None:
        """Publish the results of one frame on its camera's enabled ``outputs`` (by output name), with
        the input ``header``; a problem with the published results to warn about (e.g. boxes left out),
        or ``None``."""
        raise NotImplementedError

    def label_info_threshold(self) -> float:
        """The ``threshold`` of ``~/label_info``."""
        return 0.0

    # ---- helpers for subclasses ------------------------------------------------------------
    def create_output_publisher(self, message_type: type, topic: str, qos: QoSProfile | int, **kwargs: Any) -> Publisher:
        """A publisher of results, ``~/label_info`` or diagnostics (a lifecycle publisher in a managed node)."""
        return self.create_publisher(message_type, topic, qos, **kwargs)

    def destroy_output_publisher(self, publisher: Publisher) -> None:
        """Destroy a publisher made by ``create_output_publisher``."""
        self.destroy_publisher(publisher)

    def _create_outputs(self, camera: str, qos: QoSProfile) -> dict[str, Publisher]:
        """The result publishers of one camera by output name: ``~/<output>`` (``~/<camera>/<output>``)."""
        return {
            output.name: self.add_output(output.message_type, camera_topic(camera, f"~/{output.name}"), qos)
            for output in self.output_topics
        }

    def add_output(self, message_type: type, topic: str, qos: QoSProfile) -> Publisher:
        """A result publisher; warns on incompatible subscribers."""
        return self.create_output_publisher(
            message_type, topic, qos,
            event_callbacks=PublisherEventCallbacks(
                incompatible_qos=lambda event: self._warn_incompatible_qos(topic, event, "output_reliability")
            ),
        )

    @staticmethod
    def publish_image(publisher: Publisher, header: MessageHeader, pixels: Any, encoding: str) -> None:
        """Publish a numpy image (HxW or HxWxC) with ``encoding`` and the input header, pre-serialized."""
        publisher.publish(serialize_image(header, encode_image(pixels, encoding)))

    # ---- parameters ------------------------------------------------------------------------
    def _declare(self, definitions: Sequence[ParameterDefinition], defaults: Mapping[str, Any]) -> None:
        for definition in definitions:
            if definition.name in defaults:
                definition = replace(definition, default=defaults[definition.name])
            self._definitions[definition.name] = definition  # before declaring: the set callback checks by it
            # an empty string list has no type of its own in rclpy: declare the type instead
            default = Parameter.Type.STRING_ARRAY if definition.default == () else definition.default
            try:
                self.declare_parameter(definition.name, default, descriptor_of(definition))
            except Exception:
                del self._definitions[definition.name]  # not declared: a managed node's next configure tries again
                raise

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {}
        for parameter in parameters:
            definition = self._definitions.get(parameter.name)
            if definition is None:
                continue
            reason = check_value(definition, parameter.value) or self.check_setting(parameter.name, parameter.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
            changes[parameter.name] = parameter.value
        if changes:
            self._settings = {**self._settings, **changes}
            if "warning_period" in changes:
                self._throttle.period = changes["warning_period"]
            if self._running:
                self.settings_changed(changes)
        return SetParametersResult(successful=True)

    # ---- intake ----------------------------------------------------------------------------
    def _subscribe(self, camera: Camera) -> Subscription:
        """The camera's image subscription with its ``reliability`` (``best_effort`` | ``reliable``)."""
        qos = volatile_qos(camera.reliability, self._settings["input_depth"])
        raw = self._settings["raw_intake"]
        max_pixels = self._settings["max_pixels"]
        readers: dict[bool, Callable[[Any, int], tuple[MessageHeader, DecodedImage]]] = (
            {True: read_serialized_compressed, False: read_compressed_message}
            if self._settings["use_compressed"]
            else {True: read_serialized_image, False: read_image_message}
        )
        read = readers[raw]
        message_type, topic = (
            (CompressedImage, "image/compressed") if self._settings["use_compressed"] else (Image, "image")
        )
        topic = camera_topic(camera.name, topic)

        # Compressed frames never qualify for inline processing: their decoding time depends on the content.
        sized = not self._settings["use_compressed"]

        def on_message(message: bytes, info: Mapping[str, Any]) -> None:
            size = len(message) if sized else -1
            self._receive(camera, lambda: read(message, max_pixels), size, info["received_timestamp"])

        def on_message_only(message: bytes) -> None:  # Humble: no reception time, always the worker
            self._receive(camera, lambda: read(message, max_pixels), -1, 0)

        return self.create_subscription(
            # Always serialized bytes: decoded where processed, so that bytes neither reader accepts are
            # warned about and counted (rclpy drops what it cannot take without a word).
            message_type, topic,
            on_message if CALLBACKS_TAKE_MESSAGE_INFO else on_message_only,  # type: ignore[arg-type]
            qos,
            raw=True,
            event_callbacks=SubscriptionEventCallbacks(
                incompatible_qos=lambda event: self._warn_incompatible_qos(topic, event, "input_reliability")
            ),
        )

    def _offered_reliability(self, topic: str) -> str | None:
        """What ``topic``'s publishers offer: ``reliable`` when all of them are reliable (so a reliable
        subscription loses nothing), ``best_effort`` when any is not, ``None`` without publishers.
        The same rule rosbag2 uses to record a topic."""
        publishers = self._input_publishers(topic)[0]
        if not publishers:
            return None
        if all(info.qos_profile.reliability == ReliabilityPolicy.RELIABLE for info in publishers):
            return "reliable"
        return "best_effort"

    def _input_publishers(self, topic: str) -> tuple[list[Any], tuple[str, ...]]:
        """The publishers of ``topic`` with the message type this node reads there, and the other types
        it is published as (their messages cannot reach the node: DDS matches by type)."""
        expected = INPUT_TYPES[self._settings["use_compressed"]]
        publishers = self.get_publishers_info_by_topic(topic)
        others = tuple(sorted({info.topic_type for info in publishers} - {expected}))
        return [info for info in publishers if info.topic_type == expected], others

    def _foreign_types_problem(self, topic: str, others: tuple[str, ...]) -> Health:
        """The diagnostics error for an input topic published as ``others``; logged when they change."""
        expected = INPUT_TYPES[self._settings["use_compressed"]]
        fix = (
            f"set use_compressed:={str(not self._settings['use_compressed']).lower()}, or remap the input to a "
            f"topic of {expected}"
            if INPUT_TYPES[not self._settings["use_compressed"]] in others
            else f"remap the input to a topic of {expected}"
        )
        message = (
            f"{topic} is published as {', '.join(others)}, but this node reads {expected}: no frame can arrive; {fix}"
        )
        if self._foreign_input_types.get(topic) != others:
            self._foreign_input_types[topic] = others
            self.log_problem(message)
        return Health("ERROR", message)

    def _match_input_qos(self) -> None:
        """With ``input_reliability: auto``: re-create a camera's subscription when its publishers offer
        another reliability."""
        for camera in self._cameras:
            if camera.subscription is None:
                continue
            offered = self._offered_reliability(camera.input_topic)
            if offered is None or offered == camera.reliability:
                continue
            self.destroy_subscription(camera.subscription)
            camera.reliability = offered
            camera.subscription = self._subscribe(camera)
            self.get_logger().info(
                f"input_reliability auto: subscribed {camera.input_topic} {offered} to match its publishers"
            )

    def _receive(self, camera: Camera, frame: FrameReader, size: int, received_ns: int) -> None:
        """Process ``frame`` (a message of ``size`` bytes; -1: compressed) right here when it qualifies
        for ``inline_processing``, else leave it to the worker, replacing (and counting as dropped) the
        camera's pending frame.

        Inline: the node is idle and the frame is quick. A frame that DDS received (``received_ns``,
        system clock) after the node last finished one cannot have newer frames queued behind it, so
        processing it in the executor's thread skips the hand-off to the worker (on 2 cores 0.2-0.5 ms
        at 640x480: the executor rebuilds its wait set in Python while the worker waits for the GIL).
        One that waited while a frame was processed may have newer ones behind it in the
        subscription's history: the worker gets it, so that those replace it. Quick: the last frame that
        ran the network had the same size and took at most INLINE_MAX_SECONDS, so a large or slow frame
        (whose C calls a stop signal cannot interrupt) always runs on the worker. Only where rclpy
        passes the reception time and the rmw layer stamps it on reception (RECEPTION_STAMPING_RMW)."""
        camera.stats.frame_received()
        if self._inline and size >= 0 and size == self._quick_frame_size and self._processing.acquire(blocking=False):
            try:
                # checked under the lock: the worker may have been busy until just now; and a frame the
                # worker holds or a stopping node keeps this one out
                if received_ns >= self._idle_since_ns and self._slot.empty() and not self._stopping:
                    try:
                        self._process_guarded([(camera, frame)], size)
                    except BaseException:  # a stop signal inside the frame: stop() must not release the model
                        self._inline_interrupted = True
                        raise
                    return
            finally:
                self._processing.release()
        if self._slot.put(camera.index, (frame, size)):
            camera.stats.frame_dropped()

    def _warn_incompatible_qos(self, topic: str, event: Any, parameter: str) -> None:
        try:
            policy = QoSPolicyKind(event.last_policy_kind).name
        except ValueError:
            policy = str(event.last_policy_kind)
        value = self._settings[parameter]
        if policy != "RELIABILITY":  # the only policy a parameter sets; the others are fixed (QOS_FIXED)
            advice = f"This node's {policy} is fixed ({QOS_FIXED}); fix: change the peer's {policy} QoS"
        elif value == "auto":
            advice = (
                f"This node uses {parameter}='auto' and re-subscribes to match the topic's publishers within "
                f"{QOS_MATCH_PERIOD:g} s; no action needed unless this repeats"
            )
        else:
            advice = f"This node uses {parameter}={value!r}; fix: {QOS_FIXES[parameter]}"
        self.get_logger().warning(
            f"a peer of {self.resolve_topic_name(topic)} has QoS incompatible with this node's (policy {policy}); no messages flow "
            f"between them. {advice}"
        )

    # ---- processing ------------------------------------------------------------------------
    def _anyone_listening(self, camera: Camera, settings: Settings) -> bool:
        return any(
            settings[output.switch] and camera.outputs[output.name].get_subscription_count() > 0
            for output in self.output_topics
        )

    def _work(self) -> None:
        while not self._slot.closed:
            if not self._slot.wait(timeout=0.5):
                continue
            with self._processing:  # taken under the lock, so an idle-frame callback cannot overtake them
                taken = self._slot.take(self._batch_limit, timeout=0)
                if taken:
                    frames = [(self._cameras[index], frame) for index, (frame, _) in taken]
                    self._process_guarded(frames, taken[0][1][1] if len(taken) == 1 else -1)

    def _process_guarded(self, frames: Sequence[tuple[Camera, FrameReader]], size: int) -> None:
        """``_process``, with any unexpected error reported for the frames' cameras (one bad frame must
        not stop the node); then marks the node idle and, when the network ran, remembers ``size`` (the
        bytes of a single frame's message, -1 for none) as quick if the frames took at most
        INLINE_MAX_SECONDS. Call with ``_processing`` held."""
        start = time.monotonic()
        ran_network = False
        try:
            ran_network = self._process(frames)  # reports bad input and failed inference per camera itself
        except Exception as error:  # noqa: BLE001 - one bad frame must not stop the node
            if not self._stopping:
                self._report_problem(
                    f"frame processing failed: {type(error).__name__}: {error}", bad_input=False,
                    cameras=[camera for camera, _ in frames],
                )
        finally:
            if ran_network:  # a skipped or unreadable frame says nothing of how long the next one takes
                self._quick_frame_size = size if time.monotonic() - start <= INLINE_MAX_SECONDS else -1
            self._idle_since_ns = time.time_ns()

    def _process(self, frames: Sequence[tuple[Camera, FrameReader]]) -> bool:
        """Read the frames (one per camera), run those with listeners as one batch, publish per camera;
        whether the network ran (false when every frame was skipped or unreadable)."""
        settings = self._settings
        batch = []
        for camera, frame in frames:
            if settings["lazy"] and not self._anyone_listening(camera, settings):
                camera.stats.frame_skipped_no_subscribers()
                continue
            start = time.perf_counter()
            try:
                header, image = frame()
            except ImageDecodeError as error:
                self._report_problem(f"skipped bad input image: {error}", bad_input=True, cameras=[camera])
                continue
            batch.append(CameraFrame(camera, header, image, (time.perf_counter() - start) * 1e3))
        if len(batch) > 1:
            try:
                results = self._run_batch(batch)
            except (ImageDecodeError, InferenceError):  # find the camera whose frame failed, serve the others
                pass
            else:
                for item, result in zip(batch, results):
                    self._publish_frame(item, result, settings)
                return True
        for item in batch:
            try:
                [result] = self._run_batch([item])
            except ImageDecodeError as error:
                self._report_problem(f"skipped bad input image: {error}", bad_input=True, cameras=[item.camera])
            except InferenceError as error:
                self._report_problem(f"inference failed: {error}", bad_input=False, cameras=[item.camera])
            else:
                self._publish_frame(item, result, settings)
        return bool(batch)

    def _run_batch(self, batch: Sequence[CameraFrame]) -> list[Any]:
        """The pipeline's results for the frames, in order."""
        return self.pipeline.run_batch([(item.image.pixels, item.image.channel_order) for item in batch])

    def _publish_frame(self, item: CameraFrame, result: Any, settings: Settings) -> None:
        """Publish one camera's results and count the frame with its per-stage times; a failure to
        publish is reported for that camera alone (the other cameras of a batch still publish)."""
        published = time.perf_counter()
        try:
            problem = self.publish_results(item.camera.outputs, item.header, item.image, result, settings)
        except Exception as error:  # noqa: BLE001 - one camera's outputs must not cost the others theirs
            if self._stopping:
                raise
            self._report_problem(
                f"publishing results failed: {type(error).__name__}: {error}", bad_input=False, cameras=[item.camera]
            )
            return
        done = time.perf_counter()
        item.camera.stats.frame_processed(
            {"decode": item.decode_ms, **result.timings.milliseconds, "publish": (done - published) * 1e3}
        )
        if problem is not None:  # published all the same: a warning, not a failed frame
            message = quote_limited(problem)
            item.camera.stats.problem_noted(message)
            self.log_problem(message)

    def _report_problem(self, message: str, bad_input: bool, cameras: Sequence[Camera]) -> None:
        """Count a problem with the cameras' frames in diagnostics and log it (``log_problem``)."""
        message = quote_limited(message)
        for camera in cameras:
            camera.stats.frame_failed(message, bad_input)
        self.log_problem(message)

    def log_problem(self, message: str) -> None:
        """Log a warning, throttled by kind of problem and in total; user-supplied text is cut short."""
        text = self._throttle.admit(quote_limited(message))
        if text is not None:
            self.get_logger().warning(text)

    # ---- outputs -----------------------------------------------------------------------------
    def publish_label_info(self) -> None:
        """Publish the class names (and ``label_info_threshold``) on the latched ``~/label_info``."""
        names = self.class_names if self.class_names is not None else []
        header = Header(stamp=self.get_clock().now().to_msg())
        self._label_info.publish(label_info(header, names, self.label_info_threshold()))

    def _publish_diagnostics(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics.publish(DiagnosticArray(header=header, status=self.diagnostic_statuses()))

    def diagnostic_statuses(self) -> list[DiagnosticStatus]:
        """The node's status, then one per named camera (none for a single unnamed camera: the node's
        status is its). Each camera's input is judged on its own (stall, rate, lost share, recent error);
        the node's level is that of its worst camera."""
        period = self._settings["diagnostics_period"]
        reports = {camera.name: camera.stats.own.report() for camera in self._cameras}
        health = {camera.name: self._camera_health(camera, reports[camera.name], period) for camera in self._cameras}
        problems = [
            Health(problem.level, f"camera {name}: {problem.message}" if name else problem.message)
            for name, camera_problems in health.items()
            for problem in camera_problems
        ]
        level, message = health_level(problems)
        values = [
            ("model", self.spec.name),
            ("backend", self.pipeline.backend.name),
            ("processing_device", self.pipeline.device),
            ("input_topic", self._input_topic),
            ("input_reliability", ", ".join(camera.reliability for camera in self._cameras)),
            *self._stats.report().key_values,
            ("log_lines_suppressed", str(self._throttle.suppressed_total)),
        ]
        statuses = [diagnostic_status(f"{self.get_fully_qualified_name()}: {self.task}", self.spec.name, level, message, values)]
        for camera in self._cameras:
            if not camera.name:
                continue
            level, message = health_level(health[camera.name])
            statuses.append(diagnostic_status(
                f"{self.get_fully_qualified_name()}: {self.task} camera {camera.name}", self.spec.name, level, message,
                [("camera", camera.name), ("input_topic", camera.input_topic), *reports[camera.name].key_values],
            ))
        return statuses

    def _camera_health(self, camera: Camera, report: StatisticsReport, period: float) -> list[Health]:
        """Problems of one camera's input: its ``HealthMonitor`` against its own publishers, and its last
        error (from ``report``, its statistics now) while that is recent."""
        statistics = camera.stats.own
        publishers, others = self._input_publishers(camera.input_topic)
        problems = camera.health.assess(statistics, statistics.input_rate_hz(), len(publishers))
        if others:
            problems.append(self._foreign_types_problem(camera.input_topic, others))
        else:  # gone: the same types coming back are a change to log again
            self._foreign_input_types.pop(camera.input_topic, None)
        if report.seconds_since_error is not None and report.seconds_since_error < max(5.0, 2 * period):
            problems.append(Health("WARN", f"last error: {report.last_error}"))
        return problems

    # ---- shutdown ----------------------------------------------------------------------------
    def stop(self, timeout: float) -> bool:
        """Stop taking frames and wait up to ``timeout`` seconds for the worker, and for a frame that a
        subscription callback processes in another executor thread (inline_processing); whether both
        ended (false too after a stop signal broke off an inline frame: its backend calls may still be
        under way). Waits only on the first call: a frame still in progress after that is not waited
        for again."""
        if not hasattr(self, "_worker"):
            return True
        if not self._stopping:
            self._stopping = True
            self._slot.close()
            deadline = time.monotonic() + timeout
            self._worker.join(timeout=timeout)
            if self._processing.acquire(timeout=max(0.0, deadline - time.monotonic())):
                self._processing.release()
        return not (self._worker.is_alive() or self._processing.locked() or self._inline_interrupted)

    def destroy_node(self) -> None:
        """Stop the worker, release the model (unless the worker is still inside a frame), then destroy the ROS node.

        rclpy >= 9 (Kilted) also calls this at shutdown for a node whose ``__init__`` failed (its context
        destroys every node it still tracks): such a node has no worker yet, only the ROS node.
        """
        if self.stop(WORKER_STOP_TIMEOUT) and hasattr(self, "pipeline"):
            self.pipeline.close()
        super().destroy_node()


def spin_until_stopped(node: PerceptionNode, logger: Any) -> None:
    """Spin ``node`` until its context shuts down; an exception from any callback (a malformed service
    request from another participant, a failing timer) is logged, throttled by kind, and spinning goes on."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    throttle = MessageThrottle(period=CALLBACK_ERROR_PERIOD)
    try:
        while node.context.ok():
            try:
                executor.spin_once(timeout_sec=SPIN_TIMEOUT)
            except ExternalShutdownException:
                return
            except Exception as error:  # noqa: BLE001 - no request from the ROS graph may end the node
                text = throttle.admit(f"a callback failed, the node goes on: {type(error).__name__}: {error}")
                if text is not None:
                    logger.error(quote_limited(text))
    finally:
        executor.shutdown(timeout_sec=0.0)


def run_node(create: Callable[[], PerceptionNode], logger_name: str, args: Sequence[str] | None = None) -> int:
    """Create and spin a node until SIGINT/SIGTERM; the exit code (0 after a signal, 1 for a fatal start-up error).

    Before ``rclpy.init``: points Fast DDS at the shipped large-images profile (unless the user chose
    one) and tunes malloc for image-sized buffers, which covers Fast DDS's own allocations too.
    The first SIGINT/SIGTERM at any moment (importing, loading the model, spinning) stops the node;
    it exits 0 within ``WORKER_STOP_TIMEOUT`` seconds plus the rclpy shutdown, even while a frame is
    being processed (the worker is then abandoned, not waited for).
    """
    install_stop_signals()
    profile = use_large_images_profile()
    malloc_tuned = tune_malloc_for_large_messages()
    logger = rclpy.logging.get_logger(logger_name)
    node: PerceptionNode | None = None
    abandoned_worker = False
    try:
        rclpy.init(args=None if args is None else list(args), signal_handler_options=SignalHandlerOptions.NO)
        logger.info(profile)
        logger.debug(f"malloc tuned for large messages: {malloc_tuned}")
        node = create()
        spin_until_stopped(node, logger)
    except StopRequested:
        pass
    except STARTUP_ERRORS as error:
        logger.fatal(quote_limited(f"cannot start: {one_line(str(error))}"))
        return 1
    except RCLError as error:  # e.g. a missing --params-file, found by rclpy.init
        logger.fatal(quote_limited(f"cannot start: {error}".splitlines()[0]))
        return 1
    finally:
        if node is not None:
            abandoned_worker = not node.stop(WORKER_STOP_TIMEOUT)
            node.destroy_node()
        rclpy.try_shutdown()
    if abandoned_worker:
        # The worker is still inside one frame (inference or a large image): do not wait for it, and do
        # not let interpreter finalization tear down the runtime under it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def main_for(create: Callable[[], PerceptionNode], logger_name: str) -> int:
    """Console-script entry: run the node with the process arguments; the exit code."""
    return run_node(create, logger_name, sys.argv)
