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
from trt_perception.gpu.pipeline import Visuals
from trt_perception.image_decoding import DecodedImage
from trt_perception.ros.cdr import MessageHeader
from trt_perception.ros.parameters import SEGMENTATION_PARAMETERS, ParameterDefinition
from trt_perception.ros.perception_node import OutputTopic, PerceptionNode, Settings, main_for
from trt_perception.spec import ModelSpec

DEFAULT_MODEL_SPEC = "selfie_segmentation"
# Settings that decide which pictures the GPU frame path draws with the labels.
VISUAL_SETTINGS = frozenset({"publish_color_mask", "publish_overlay", "overlay_alpha"})


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

    def settings_changed(self, changes: Settings) -> None:
        # processing_device gpu: the frame path draws colour mask and overlay on the device, in the
        # labels' kernel, and the labels come back as a view that is published before the next frame.
        # One camera only: with several, a batch runs every frame before any is published.
        if VISUAL_SETTINGS.isdisjoint(changes):
            return
        settings = self._settings
        if len(self._cameras) == 1 and getattr(self.pipeline, "frame_path", None) is not None:
            self.pipeline.visuals = Visuals(  # type: ignore[union-attr]
                settings["publish_color_mask"], settings["publish_overlay"], settings["overlay_alpha"]
            )
            self.pipeline.reuse_outputs = True  # type: ignore[union-attr]
        elif settings["publish_color_mask"] or settings["publish_overlay"]:
            # the CPU colours the labels: a two-class model's in one compiled pass, loaded once per
            # process (numba: a few hundred milliseconds, at configure or when a picture is switched on)
            visualize.prepare_colouring(len(self.class_names or ()))

    def publish_results(
        self, outputs: Mapping[str, Publisher], header: MessageHeader, image: DecodedImage, result: Any, settings: Settings
    ) -> str | None:
        labels = result.labels
        if settings["publish_labels"]:
            self.publish_image(outputs["labels"], header, labels, "mono8" if labels.dtype == np.uint8 else "mono16")
        if not (settings["publish_color_mask"] or settings["publish_overlay"]):
            return None
        drawn = getattr(self.pipeline, "published", None)  # pictures the GPU drew for this frame, if any
        colors = drawn.color_mask if drawn is not None else None
        picture = drawn.overlay if drawn is not None else None
        if colors is None and (settings["publish_color_mask"] or picture is None):
            colors = visualize.colorize(labels, self._palette)
        if settings["publish_color_mask"]:
            self.publish_image(outputs["color_mask"], header, colors, "rgb8")
        if settings["publish_overlay"]:
            if picture is None:
                assert colors is not None
                rgb = visualize.as_rgb(image.pixels, image.channel_order)
                picture = visualize.overlay(rgb, colors, settings["overlay_alpha"])
            self.publish_image(outputs["overlay"], header, picture, "rgb8")
        return None


def main() -> int:
    """Entry point of the ``segmentation_node`` executable; the exit code."""
    return main_for(SegmentationNode, "segmentation")


if __name__ == "__main__":
    sys.exit(main())
