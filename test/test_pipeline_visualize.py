"""visualize: palettes, colouring, overlays and box drawing against hand-computed pixels."""

from __future__ import annotations

import numpy as np
import pytest

from trt_perception.results import Detections
from trt_perception.visualize import (
    CITYSCAPES_COLORS,
    as_rgb,
    colorize,
    default_palette,
    draw_detections,
    make_palette,
    overlay,
)


def test_default_palette_starts_with_cityscapes_and_stays_distinct():
    palette = default_palette(300)
    assert palette.shape == (300, 3) and palette.dtype == np.uint8
    assert [tuple(c) for c in palette[:19]] == list(CITYSCAPES_COLORS)
    assert len({tuple(c) for c in palette}) == 300, "all colours differ"
    np.testing.assert_array_equal(default_palette(300), palette)  # deterministic
    # beyond Cityscapes, PASCAL VOC's bit interleaving: index 19 = 0b010_011, the low triple
    # (r, g, b) = (1, 1, 0) sets bit 7, the next (0, 1, 0) sets bit 6 -> (128, 192, 0)
    assert tuple(int(v) for v in palette[19]) == (128, 192, 0)


def test_make_palette_puts_spec_colours_first():
    palette = make_palette([[1, 2, 3], [4, 5, 6]], 4)
    assert [tuple(c) for c in palette] == [(1, 2, 3), (4, 5, 6), CITYSCAPES_COLORS[2], CITYSCAPES_COLORS[3]]


def test_colorize_and_overlay():
    labels = np.array([[0, 1], [1, 3]], np.uint8)
    palette = np.array([[0, 0, 0], [200, 100, 50]], np.uint8)
    colours = colorize(labels, palette)
    assert colours.tolist() == [[[0, 0, 0], [200, 100, 50]], [[200, 100, 50], list(CITYSCAPES_COLORS[3])]]
    image = np.full((2, 2, 3), 100, np.uint8)
    blended = overlay(image, colours, alpha=0.25)
    expected = np.rint(image * 0.75 + colours * 0.25).astype(np.uint8)
    np.testing.assert_array_equal(blended, expected)
    with pytest.raises(ValueError, match="alpha must be in"):
        overlay(image, colours, alpha=1.5)


def test_overlay_resizes_network_size_colours_to_the_image():
    image = np.zeros((4, 6, 3), np.uint8)
    colours = np.array([[[255, 0, 0], [0, 255, 0]]], np.uint8)  # 1x2: left red, right green
    blended = overlay(image, colours, alpha=1.0)
    assert blended.shape == (4, 6, 3)
    assert np.all(blended[:, :3] == [255, 0, 0]) and np.all(blended[:, 3:] == [0, 255, 0])


def test_as_rgb_converts_channel_orders_and_copies():
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 2] = 10, 30
    assert as_rgb(bgra, "BGRA")[0, 0].tolist() == [30, 0, 10]
    rgb = np.ones((2, 2, 3), np.uint8)
    converted = as_rgb(rgb, "RGB")
    assert converted is not rgb and np.array_equal(converted, rgb)
    mono16 = np.full((2, 2, 1), 0xABCD, np.uint16)
    assert as_rgb(mono16, "MONO")[0, 0].tolist() == [0xAB, 0xAB, 0xAB]


def test_draw_detections_draws_each_box_in_its_class_colour_without_touching_the_input():
    image = np.zeros((100, 120, 3), np.uint8)
    detections = Detections(np.array([[20, 40, 80, 90]]), np.array([0.9]), np.array([1]))
    drawn = draw_detections(image, detections, ("cat", "dog"), np.array([[0, 0, 255], [0, 255, 0]], np.uint8))
    assert not image.any(), "the input image is not modified"
    assert drawn[65, 20].tolist() == [0, 255, 0], "left edge in the class colour (green for dog)"
    assert drawn[65, 80].tolist() == [0, 255, 0], "right edge"
    assert drawn[90, 50].tolist() == [0, 255, 0], "bottom edge"
    assert not drawn[60:80, 30:70].any(), "inside the box stays untouched"
    assert drawn[25:40, 20:60].any(), "the label sits above the box"
