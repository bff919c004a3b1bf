"""Detection node: camera images in, ``vision_msgs/Detection2DArray`` (and optional overlay) out.

Publishes ``~/detections`` (boxes in source pixels, ``class_id`` = class index as text, or the
class name with ``class_id_format: name``; ``id`` empty), ``~/overlay`` (rgb8, boxes drawn on the input) when enabled, and ``~/label_info``; every
output carries the input image's header. Score threshold, NMS IoU, max detections, class-agnostic
NMS and the class allow-list change at run time.
"""

from __future__ import annotations

import sys

from collections.abc import Mapping, Sequence
from typing import Any

from rclpy.publisher import Publisher
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from trt_perception import visualize
from trt_perception.decoders import DetectionFilter
from trt_perception.image_decoding import DecodedImage
from trt_perception.ros.cdr import MessageHeader
from trt_perception.ros.messages import detection_array
from trt_perception.ros.parameters import ParameterDefinition, detection_parameters
from trt_perception.ros.image_conversion import header_msg
from trt_perception.ros.perception_node import OutputTopic, PerceptionNode, Settings, main_for

DEFAULT_MODEL_SPEC = "centernet_mobilenetv3_coco"
FILTER_PARAMETERS = frozenset({"score_threshold", "nms_iou", "class_agnostic", "max_detections", "classes"})


def parse_classes(text: str, class_names: Sequence[str] | None) -> frozenset[int] | None:
    """Class indices from a comma-separated list of names or indices (``None`` for an empty list).

    Raises ``ValueError`` naming an unknown class.
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        return None
    names = list(class_names or [])
    indices = []
    for item in items:
        if item in names:
            indices.append(names.index(item))
        elif item.isdigit() and (not names or int(item) < len(names)):
            indices.append(int(item))
        else:
            raise ValueError(f"classes: unknown class {item!r} (not a class name or index of this model)")
    return frozenset(indices)


class DetectionNode(PerceptionNode):
    """Runs a detection model spec on the newest image."""

    task = "detection"
    output_topics = (
        OutputTopic("detections", Detection2DArray, "publish_detections"),
        OutputTopic("overlay", Image, "publish_overlay"),
    )

    def __init__(self) -> None:
        super().__init__("detection", DEFAULT_MODEL_SPEC)

    def task_parameters(self) -> Sequence[ParameterDefinition]:
        detection = self.spec.detection
        return detection_parameters(
            detection.score_threshold, detection.nms_iou, detection.max_detections,
            detection.class_agnostic, [str(c) for c in detection.classes or ()],
        )

    def check_setting(self, name: str, value: Any) -> str | None:
        if name == "classes":
            try:
                parse_classes(value, self.class_names)
            except ValueError as error:
                return str(error)
        return None

    def settings_changed(self, changes: Settings) -> None:
        if not FILTER_PARAMETERS.isdisjoint(changes):
            settings = self._settings
            # One assignment: the worker reads the filter once per frame.
            self.pipeline.detection_filter = DetectionFilter(
                score_threshold=settings["score_threshold"],
                nms_iou=None if settings["nms_iou"] >= 1.0 else settings["nms_iou"],
                class_agnostic=settings["class_agnostic"],
                max_detections=settings["max_detections"],
                allowed_class_ids=parse_classes(settings["classes"], self.class_names),
            )
        if "score_threshold" in changes and self._running:
            self.publish_label_info()

    def label_info_threshold(self) -> float:
        return float(self._settings["score_threshold"])

    def publish_results(
        self, outputs: Mapping[str, Publisher], header: MessageHeader, image: DecodedImage, result: Any, settings: Settings
    ) -> str | None:
        detections = result.detections
        inverted = detections.inverted_left_out
        if settings["publish_detections"]:
            outputs["detections"].publish(
                detection_array(header_msg(header), detections, self.class_names, settings["class_id_format"])
            )
        if settings["publish_overlay"]:
            rgb = visualize.as_rgb(image.pixels, image.channel_order)
            drawn = visualize.draw_detections(rgb, detections, tuple(self.class_names or ()))
            self.publish_image(outputs["overlay"], header, visualize.overlay(rgb, drawn, settings["overlay_alpha"]), "rgb8")
        if inverted:
            return (
                f"the model's outputs decoded to {inverted} boxes with negative width or height; not published "
                f"(check the spec's detection box format)"
            )
        return None


def main() -> int:
    """Entry point of the ``detection_node`` executable; the exit code."""
    return main_for(DetectionNode, "detection")


if __name__ == "__main__":
    sys.exit(main())
