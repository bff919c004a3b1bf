"""Inference results to ROS messages: Detection2DArray, LabelInfo and DiagnosticStatus."""

from __future__ import annotations

from collections.abc import Sequence

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from std_msgs.msg import Header
from vision_msgs.msg import (
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
    VisionClass,
)

from trt_perception.results import Detections


def class_id_text(class_index: int, class_names: Sequence[str] | None, class_id_format: str = "index") -> str:
    """The ``class_id`` string of a detection.

    ``index`` (vision_msgs 4's convention, names through ``LabelInfo``): the class index as text;
    ``name``: the class name, or the index when the model has no name for it.
    """
    if class_id_format == "name" and class_names is not None and 0 <= class_index < len(class_names):
        return class_names[class_index]
    return str(class_index)


def detection_array(
    header: Header, detections: Detections, class_names: Sequence[str] | None, class_id_format: str = "index"
) -> Detection2DArray:
    """A ``Detection2DArray`` of ``xyxy`` boxes in source pixels; every detection gets ``header``.

    ``class_id_format`` (``index`` | ``name``) is what ``class_id`` carries (``class_id_text``). Boxes
    must not be inverted (``filter_detections`` leaves such boxes out).
    """
    message = Detection2DArray(header=header)
    for (x1, y1, x2, y2), score, class_index in zip(
        detections.boxes.tolist(), detections.scores.tolist(), detections.class_ids.tolist()
    ):
        detection = Detection2D(header=header)
        detection.bbox.center.position.x = (x1 + x2) / 2.0
        detection.bbox.center.position.y = (y1 + y2) / 2.0
        detection.bbox.size_x = x2 - x1
        detection.bbox.size_y = y2 - y1
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = class_id_text(class_index, class_names, class_id_format)
        hypothesis.hypothesis.score = score
        detection.results.append(hypothesis)
        message.detections.append(detection)
    return message


def label_info(header: Header, class_names: Sequence[str], threshold: float) -> LabelInfo:
    """``LabelInfo`` mapping class indices to names."""
    return LabelInfo(
        header=header,
        class_map=[VisionClass(class_id=index, class_name=name) for index, name in enumerate(class_names)],
        threshold=float(threshold),
    )


def diagnostic_status(
    name: str, hardware_id: str, level: bytes, message: str, key_values: Sequence[tuple[str, str]]
) -> DiagnosticStatus:
    """One ``DiagnosticStatus`` with the given key/value pairs."""
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=value) for key, value in key_values],
    )
