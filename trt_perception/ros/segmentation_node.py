"""Segmentation node: camera images in, label images (and optional colour mask / overlay) out.

Publishes ``~/labels`` (mono8, or mono16 above 256 classes), ``~/color_mask`` (rgb8, the spec's
palette) and ``~/overlay`` (rgb8, mask blended on the input), each only when enabled, plus
``~/label_info``; every output carries the input image's header.
"""

from __future__ import annotations

import sys

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from rclpy.publisher import Publisher
from sensor_msgs.msg import Image

from trt_perception import visualize
from trt_perception.image_decoding import DecodedImage
from trt_perception.ros.cdr import MessageHeader
from trt_perception.ros.parameters import SEGMENTATION_PARAMETERS, ParameterDefinition
from trt_perception.ros.perception_node import OutputTopic, PerceptionNode, Settings, main_for
from trt_perception.spec import ModelSpec

DEFAULT_MODEL_SPEC = "selfie_segmentation"


class SegmentationNode(PerceptionNode):
    """Runs a segmentation model spec on the newest image."""

    task = "segmentation"
    output_topics = (
        OutputTopic("labels", Image, "publish_labels"),
        OutputTopic("color_mask", Image, "publish_color_mask"),
        OutputTopic("overlay", Image, "publish_overlay"),
    )

    def __init__(self) -> None:
        super().__init__("segmentation", DEFAULT_MODEL_SPEC)

    def task_parameters(self) -> Sequence[ParameterDefinition]:
        return SEGMENTATION_PARAMETERS

    def configure_pipeline(self) -> None:
        super().configure_pipeline()
        self._palette = visualize.make_palette(self.spec.palette, len(self.class_names or ()))

    def adjust_spec(self, spec: ModelSpec) -> ModelSpec:
        return replace(spec, output_resolution=self._settings["output_resolution"] or spec.output_resolution)

    def publish_results(
        self, outputs: Mapping[str, Publisher], header: MessageHeader, image: DecodedImage, result: Any, settings: Settings
    ) -> None:
        labels = result.labels
        if settings["publish_labels"]:
            self.publish_image(outputs["labels"], header, labels, "mono8" if labels.dtype == np.uint8 else "mono16")
        if not (settings["publish_color_mask"] or settings["publish_overlay"]):
            return
        colors = visualize.colorize(labels, self._palette)
        if settings["publish_color_mask"]:
            self.publish_image(outputs["color_mask"], header, colors, "rgb8")
        if settings["publish_overlay"]:
            rgb = visualize.as_rgb(image.pixels, image.channel_order)
            self.publish_image(outputs["overlay"], header, visualize.overlay(rgb, colors, settings["overlay_alpha"]), "rgb8")


def main() -> int:
    """Entry point of the ``segmentation_node`` executable; the exit code."""
    return main_for(SegmentationNode, "segmentation")


if __name__ == "__main__":
    sys.exit(main())
