"""The nodes' ROS parameters: names, defaults, descriptions and validation (no ROS import).

``perception_node`` declares these with ``ParameterDescriptor``s (read-only unless ``runtime``,
numeric ranges) and runs ``check_value`` in its set-parameters callback, so a bad value is rejected
with a reason at start-up and at run time alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from trt_perception.image_decoding import DEFAULT_MAX_PIXELS

ParameterValue = bool | int | float | str | tuple[str, ...]


@dataclass(frozen=True)
class ParameterDefinition:
    """One node parameter: its default (which fixes its type) and the rules for its values."""

    name: str
    default: ParameterValue
    description: str
    runtime: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    @property
    def constraints(self) -> str:
        """Human-readable value rules, shown by ``ros2 param describe``."""
        parts = []
        if self.choices is not None:
            parts.append("one of: " + ", ".join(repr(c) for c in self.choices))
        if self.minimum is not None or self.maximum is not None:
            parts.append(f"range [{self.minimum}, {self.maximum}]")
        parts.append("changeable at run time" if self.runtime else "read at start-up only")
        return "; ".join(parts)


def check_value(definition: ParameterDefinition, value: object) -> str | None:
    """Why ``value`` is not acceptable for ``definition``, or ``None`` when it is."""
    name = definition.name
    if isinstance(definition.default, bool):
        if not isinstance(value, bool):
            return f"{name} must be a bool, got {value!r}"
        return None
    if isinstance(definition.default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, got {value!r}"
        if isinstance(definition.default, int) and not isinstance(value, int):
            return f"{name} must be an integer, got {value!r}"
        if not math.isfinite(value):
            return f"{name} must be finite, got {value!r}"
        if definition.minimum is not None and value < definition.minimum:
            return f"{name} must be >= {definition.minimum}, got {value!r}"
        if definition.maximum is not None and value > definition.maximum:
            return f"{name} must be <= {definition.maximum}, got {value!r}"
        return None
    if isinstance(definition.default, str):
        if not isinstance(value, str):
            return f"{name} must be a string, got {value!r}"
        if definition.choices is not None and value not in definition.choices:
            return f"{name} must be one of {', '.join(repr(c) for c in definition.choices)}, got {value!r}"
        return None
    if isinstance(definition.default, tuple):
        if value is not None and not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            return f"{name} must be a list of strings, got {value!r}"
        return None
    raise TypeError(f"parameter {name}: unsupported default {definition.default!r}")


RELIABILITY_CHOICES = ("best_effort", "reliable")
CLASS_ID_FORMATS = ("index", "name")

COMMON_PARAMETERS: tuple[ParameterDefinition, ...] = (
    ParameterDefinition(
        "model_spec", "", "Model spec YAML: a path, or the name of a spec bundled in share/trt_perception/config/models"
    ),
    ParameterDefinition("model_path", "", "Overrides the spec's `model` (ONNX file); empty keeps the spec's"),
    ParameterDefinition("engine_path", "", "Overrides the spec's `engine` (TensorRT engine); empty keeps the spec's"),
    ParameterDefinition(
        "backend", "", "Overrides the spec's `backend`; empty keeps the spec's",
        choices=("", "auto", "onnxruntime", "tensorrt"),
    ),
    ParameterDefinition(
        "precision", "",
        "TensorRT: precision of an engine built at start-up from the ONNX model (engine cache); empty keeps the "
        "spec's tensorrt.precision (default fp32). int8 needs calibration_images or calibration_cache",
        choices=("", "fp32", "fp16", "int8"),
    ),
    ParameterDefinition(
        "calibration_images", "", "TensorRT INT8: folder of calibration images; empty keeps the spec's"
    ),
    ParameterDefinition(
        "calibration_cache", "", "TensorRT INT8: calibration cache file (read if it exists, else written); "
        "empty keeps the spec's"
    ),
    ParameterDefinition(
        "processing_device", "cpu",
        "Where pre/post-processing runs: cpu, gpu (CuPy and a CUDA device, else the node does not start) "
        "or auto (gpu when available, else cpu)",
        choices=("cpu", "gpu", "auto"),
    ),
    ParameterDefinition(
        "intra_op_threads", 0, "ONNX Runtime intra-op threads for inference; 0 keeps ONNX Runtime's default",
        minimum=0, maximum=1024,
    ),
    ParameterDefinition(
        "opencv_threads", 1,
        "Threads of OpenCV's own thread pool (process-wide). 1: every OpenCV call runs on the thread that makes "
        "it, so no small step waits for another thread to wake up; frames large enough to pay for it are still "
        "cut into row bands over the cores by trt_perception. 0: OpenCV's default (one per core), the bands "
        "following it",
        minimum=0, maximum=1024,
    ),
    ParameterDefinition(
        "inline_processing", True,
        "Process a frame that arrives while the node is idle right in its subscription callback, without the "
        "hand-off to the worker thread (lower latency; parameters, services and timers wait until that frame "
        "is published). Frames that arrive while one is processed go to the worker, newest only. false: every "
        "frame goes through the worker. Several cameras, compressed input and rmw layers other than Fast DDS "
        "(which stamps the reception time this needs) always use the worker",
    ),
    ParameterDefinition(
        "input_reliability",
        "auto",
        "Reliability of the image subscription: auto (what the topic's publishers offer: reliable when all are "
        "reliable, else best_effort; re-checked every second), best_effort or reliable",
        choices=("auto", *RELIABILITY_CHOICES),
    ),
    ParameterDefinition("input_depth", 5, "History depth of the image subscription", minimum=1, maximum=1000),
    ParameterDefinition(
        "output_reliability",
        "reliable",
        "Reliability of the result publishers (reliable serves reliable and best-effort subscribers)",
        choices=RELIABILITY_CHOICES,
    ),
    ParameterDefinition("output_depth", 5, "History depth of the result publishers", minimum=1, maximum=1000),
    ParameterDefinition(
        "use_compressed", False,
        "Subscribe to `image/compressed` (sensor_msgs/CompressedImage, jpeg/png) instead of `image`",
    ),
    ParameterDefinition(
        "raw_intake",
        True,
        "Read incoming images straight from their serialized (CDR) bytes instead of building rclpy messages",
    ),
    ParameterDefinition(
        "max_pixels", DEFAULT_MAX_PIXELS,
        "Most pixels (width x height) an input image may have, checked from the message or the jpeg/png header "
        "before decoding; larger frames are skipped with a warning. 0: no limit",
        minimum=0, maximum=2**40,
    ),
    ParameterDefinition("lazy", True, "Skip inference while no output topic has a subscriber", runtime=True),
    ParameterDefinition(
        "publish_overlay", False, "Publish ~/overlay: the results drawn on the input image", runtime=True
    ),
    ParameterDefinition(
        "overlay_alpha", 0.5, "Weight of the results in ~/overlay (0: input only, 1: results only)", runtime=True,
        minimum=0.0, maximum=1.0,
    ),
    ParameterDefinition(
        "diagnostics_period", 1.0, "Seconds between /diagnostics messages", minimum=0.05, maximum=3600.0
    ),
    ParameterDefinition(
        "cameras", (),
        "Names of several cameras for one node: each subscribes to <camera>/image (or <camera>/image/compressed) "
        "and publishes on ~/<camera>/<output>; the newest frame of each runs through the network as one batch "
        "where the model's batch dimension allows. Empty: one camera on `image`, outputs on ~/<output>",
    ),
    ParameterDefinition(
        "input_rate_min_hz", 0.0, "Diagnostics WARN while frames arrive slower than this; 0: unchecked",
        minimum=0.0, maximum=10000.0,
    ),
    ParameterDefinition(
        "input_rate_max_hz", 0.0, "Diagnostics WARN while frames arrive faster than this; 0: unchecked",
        minimum=0.0, maximum=10000.0,
    ),
    ParameterDefinition(
        "stall_timeout", 3.0, "Diagnostics ERROR when no frame arrived for this many seconds while the input "
        "topic has a publisher", minimum=0.1, maximum=3600.0,
    ),
    ParameterDefinition(
        "max_lost_share", 0.5, "Diagnostics WARN when more than this share of the frames received since the last "
        "report were dropped (replaced by newer ones) or skipped (bad input, failed)", minimum=0.0, maximum=1.0,
    ),
    ParameterDefinition(
        "warning_period", 5.0, "Seconds before a bad-input warning of the same kind is logged again", runtime=True,
        minimum=0.0, maximum=3600.0,
    ),
)

SEGMENTATION_PARAMETERS: tuple[ParameterDefinition, ...] = (
    ParameterDefinition("publish_labels", True, "Publish ~/labels (mono8, or mono16 above 256 classes)", runtime=True),
    ParameterDefinition("publish_color_mask", False, "Publish ~/color_mask (rgb8, the spec's palette)", runtime=True),
    ParameterDefinition(
        "output_resolution", "", "Resolution of the label image: source, network, or empty for the spec's",
        choices=("", "source", "network"),
    ),
)


def detection_parameters(
    score_threshold: float, nms_iou: float | None, max_detections: int, class_agnostic: bool, classes: Sequence[str]
) -> tuple[ParameterDefinition, ...]:
    """Detection filter parameters; defaults come from the model spec's ``detection`` section."""
    return (
        ParameterDefinition(
            "score_threshold", float(score_threshold), "Minimum detection score", runtime=True, minimum=0.0, maximum=1.0
        ),
        ParameterDefinition(
            "nms_iou", 1.0 if nms_iou is None else float(nms_iou),
            "IoU above which host NMS suppresses the weaker box; 1.0 turns host NMS off", runtime=True,
            minimum=0.0, maximum=1.0,
        ),
        ParameterDefinition("max_detections", int(max_detections), "Most detections per image", runtime=True, minimum=1,
                            maximum=100000),
        ParameterDefinition("class_agnostic", bool(class_agnostic), "NMS across classes instead of per class",
                            runtime=True),
        ParameterDefinition(
            "classes", ",".join(str(c) for c in classes),
            "Comma-separated class names or indices to keep; empty keeps all", runtime=True,
        ),
        ParameterDefinition("publish_detections", True, "Publish ~/detections (vision_msgs/Detection2DArray)",
                            runtime=True),
        ParameterDefinition(
            "class_id_format", "index",
            "What results[].hypothesis.class_id carries: the class index as text (names in ~/label_info) or the "
            "class name", runtime=True, choices=CLASS_ID_FORMATS,
        ),
    )
