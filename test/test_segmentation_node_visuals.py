"""Which colour mask / overlay the segmentation node publishes: the ones the GPU frame path drew
for the frame (``processing_device: gpu``), else the CPU's ``visualize`` pictures. The node's
methods run on a stand-in object (no ROS graph, no GPU), so this runs everywhere."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest

from trt_perception import visualize
from trt_perception.gpu.frame_path import PublishedFrame
from trt_perception.gpu.pipeline import Visuals
from trt_perception.image_decoding import DecodedImage
from trt_perception.ros.segmentation_node import SegmentationNode

SETTINGS = {"publish_labels": True, "publish_color_mask": True, "publish_overlay": True, "overlay_alpha": 0.4}
OUTPUTS = {"labels": "labels", "color_mask": "color_mask", "overlay": "overlay"}  # publishers by output name


def stand_in(pipeline: Any, cameras: int = 1, classes: int = 3) -> tuple[Any, list[tuple[str, np.ndarray]]]:
    published: list[tuple[str, np.ndarray]] = []
    node = types.SimpleNamespace(
        pipeline=pipeline, _settings=dict(SETTINGS), _palette=visualize.default_palette(classes), _cameras=[None] * cameras,
        class_names=tuple(f"class {index}" for index in range(classes)),
        publish_image=lambda publisher, header, pixels, encoding: published.append((publisher, pixels)),
    )
    return node, published


def frame_and_labels() -> tuple[DecodedImage, np.ndarray]:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (12, 16)).astype(np.uint8)
    return DecodedImage(pixels, "BGR"), labels


def test_cpu_pipeline_pictures_come_from_visualize() -> None:
    image, labels = frame_and_labels()
    node, published = stand_in(types.SimpleNamespace())  # a CPU Pipeline has no frame path / published
    SegmentationNode.publish_results(node, OUTPUTS, None, image, types.SimpleNamespace(labels=labels), SETTINGS)
    colours = visualize.colorize(labels, node._palette)
    assert [topic for topic, _ in published] == ["labels", "color_mask", "overlay"]
    np.testing.assert_array_equal(published[1][1], colours)
    np.testing.assert_array_equal(published[2][1], visualize.overlay(visualize.as_rgb(image.pixels, "BGR"), colours, 0.4))


@pytest.mark.parametrize("drawn", [("color_mask", "overlay"), ("overlay",), ("color_mask",)])
def test_gpu_drawn_pictures_are_published_as_drawn(drawn: tuple[str, ...]) -> None:
    image, labels = frame_and_labels()
    mask = np.full((12, 16, 3), 7, np.uint8) if "color_mask" in drawn else None  # not what the CPU would draw
    blend = np.full((12, 16, 3), 9, np.uint8) if "overlay" in drawn else None
    pipeline = types.SimpleNamespace(frame_path=object(), published=PublishedFrame(labels, mask, blend, None))
    node, published = stand_in(pipeline)
    SegmentationNode.publish_results(node, OUTPUTS, None, image, types.SimpleNamespace(labels=labels), SETTINGS)
    colours = visualize.colorize(labels, node._palette)
    assert published[1][1] is mask if mask is not None else np.array_equal(published[1][1], colours)
    base = mask if mask is not None else colours  # a drawn mask is the frame's colours (the GPU equals colorize)
    expected_overlay = blend if blend is not None else visualize.overlay(visualize.as_rgb(image.pixels, "BGR"), base, 0.4)
    np.testing.assert_array_equal(published[2][1], expected_overlay)


def test_settings_choose_what_the_frame_path_draws() -> None:
    pipeline = types.SimpleNamespace(frame_path=object(), visuals=Visuals(), reuse_outputs=False)
    node, _ = stand_in(pipeline)
    node._settings.update(publish_color_mask=False, publish_overlay=True, overlay_alpha=0.7)
    SegmentationNode.settings_changed(node, {"publish_overlay": True})
    assert pipeline.visuals == Visuals(color_mask=False, overlay=True, overlay_alpha=0.7)
    assert pipeline.reuse_outputs is True
    SegmentationNode.settings_changed(node, {"publish_labels": False})  # not a picture setting: unchanged
    assert pipeline.visuals == Visuals(color_mask=False, overlay=True, overlay_alpha=0.7)


def test_several_cameras_keep_the_cpu_pictures_and_own_labels() -> None:
    # a batch of several cameras runs every frame before any is published: the frame path must neither
    # draw one frame's pictures for all nor hand out label views the next frame overwrites
    pipeline = types.SimpleNamespace(frame_path=object(), visuals=Visuals(), reuse_outputs=False)
    node, _ = stand_in(pipeline, cameras=2)
    SegmentationNode.settings_changed(node, {"publish_overlay": True})
    assert pipeline.visuals == Visuals() and pipeline.reuse_outputs is False


@pytest.mark.parametrize(
    "classes, changes, frame_path, compiled",
    [
        (2, {"publish_color_mask": True}, False, True),  # the CPU colours 0/1 labels: the compiled pass
        (2, {"publish_overlay": True}, False, True),
        (2, {"publish_color_mask": False, "publish_overlay": False}, False, False),  # labels only: no numba for it
        (3, {"publish_color_mask": True}, False, False),  # more classes: OpenCV's table lookups
        (2, {"publish_color_mask": True}, True, False),  # the GPU frame path draws the pictures
    ],
)
def test_the_compiled_colouring_is_loaded_only_where_the_cpu_colours_two_classes(
    classes: int, changes: dict[str, bool], frame_path: bool, compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(visualize, "_binary_colouring", None)
    pipeline = types.SimpleNamespace(frame_path=object() if frame_path else None, visuals=Visuals(), reuse_outputs=False)
    node, _ = stand_in(pipeline, classes=classes)
    node._settings.update(changes)
    SegmentationNode.settings_changed(node, changes)
    assert (visualize._binary_colouring is not None) is compiled
