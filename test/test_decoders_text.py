"""DBNet text-box decoder (db_text) on synthetic probability maps, expected boxes by hand.

PaddleOCR's rule, written out here: a region's minimum-area rectangle w x h is grown on every side by
``d = w * h * unclip_ratio / (2 * (w + h))``; its score is the mean probability inside the rectangle.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from trt_perception.decoders import create_decoder
from trt_perception.errors import SpecError
from trt_perception.geometry import ResizeGeometry

GEOMETRY = ResizeGeometry.stretch((100, 200), (100, 200))


def decoder(**params):
    return create_decoder("detection", {"type": "db_text", "output": "maps", **params}, 1)


def probability_map(*rectangles: tuple[int, int, int, int, float]) -> np.ndarray:
    """[1,1,100,200] map: 0.05 background, each (x, y, w, h, p) rectangle filled with p."""
    pmap = np.full((1, 1, 100, 200), 0.05, np.float32)
    for x, y, w, h, p in rectangles:
        pmap[0, 0, y : y + h, x : x + w] = p
    return pmap


def test_a_text_region_becomes_its_grown_rectangle():
    # pixels 20..79 x 30..39: the contour runs through the pixel centres, so the rectangle is 59 x 9
    detections = decoder(unclip_ratio=1.5).decode({"maps": probability_map((20, 30, 60, 10, 0.9))}, GEOMETRY, 0.5)
    distance = 59 * 9 * 1.5 / (2 * (59 + 9))
    centre_x, centre_y = (20 + 79) / 2, (30 + 39) / 2
    expected = [centre_x - 59 / 2 - distance, centre_y - 9 / 2 - distance,
                centre_x + 59 / 2 + distance, centre_y + 9 / 2 + distance]
    np.testing.assert_allclose(detections.boxes, [expected], atol=1e-3)
    assert detections.scores[0] == pytest.approx(0.9, abs=1e-6)  # mean probability inside the rectangle
    assert detections.class_ids.tolist() == [0]


def test_box_score_threshold_and_min_size_filter_regions():
    pmap = probability_map((10, 10, 50, 10, 0.9), (10, 50, 50, 10, 0.4), (100, 50, 50, 2, 0.9))
    detections = decoder().decode({"maps": pmap}, GEOMETRY, 0.5)
    # the 0.4 region is above the 0.3 bitmap threshold but its mean is under the box threshold 0.5;
    # the 2-pixel-high one has a 1-pixel rectangle side, under min_size 3
    assert len(detections.boxes) == 1 and detections.boxes[0, 1] < 20
    assert len(decoder().decode({"maps": pmap}, GEOMETRY, 0.35).boxes) == 2


def test_a_rotated_region_gives_the_envelope_of_its_rotated_rectangle():
    import cv2

    pmap = np.full((100, 200), 0.0, np.float32)
    corners = cv2.boxPoints(((100.0, 50.0), (80.0, 12.0), 30.0))
    cv2.fillPoly(pmap, [np.round(corners).astype(np.int32)], 1.0)
    detections = decoder(unclip_ratio=1.0).decode({"maps": pmap[None, None]}, GEOMETRY, 0.5)
    assert len(detections.boxes) == 1
    (x1, y1, x2, y2), = detections.boxes
    # the region's minimum-area rectangle (OpenCV), grown by d on every side, then its envelope
    contours, _ = cv2.findContours((pmap > 0.3).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    (centre_x, centre_y), (width, height), angle_degrees = cv2.minAreaRect(contours[0])
    assert sorted((width, height)) == pytest.approx([12, 80], abs=2)  # the drawn rectangle, give or take rasterization
    distance = width * height / (2 * (width + height))
    grown_w, grown_h = width + 2 * distance, height + 2 * distance
    angle = math.radians(angle_degrees)
    half_x = (grown_w * abs(math.cos(angle)) + grown_h * abs(math.sin(angle))) / 2
    half_y = (grown_w * abs(math.sin(angle)) + grown_h * abs(math.cos(angle))) / 2
    expected = (centre_x - half_x, centre_y - half_y, centre_x + half_x, centre_y + half_y)
    assert (x1, y1, x2, y2) == pytest.approx(expected, abs=1e-3)


def test_dilation_joins_regions_one_pixel_apart():
    pmap = probability_map((20, 30, 30, 10, 0.9), (51, 30, 30, 10, 0.9))
    assert len(decoder().decode({"maps": pmap}, GEOMETRY, 0.5).boxes) == 2
    assert len(decoder(dilate=True).decode({"maps": pmap}, GEOMETRY, 0.5).boxes) == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [({"threshold": 1.5}, "decoder.threshold"), ({"unclip_ratio": -1}, "decoder.unclip_ratio"),
     ({"dilate": "yes"}, "decoder.dilate"), ({"max_candidates": 0}, "decoder.max_candidates"),
     # docs/model_spec.md said every detection type takes these; db_text has one class and mean-probability scores
     ({"class_offset": 1}, "decoder.class_offset: unknown parameter"),
     ({"score_activation": "sigmoid"}, "decoder.score_activation: unknown parameter")],
)
def test_bad_parameters_name_the_key(params, message):
    with pytest.raises(SpecError, match=message):
        decoder(**params)


def test_the_segmentation_db_text_decoder_labels_the_grown_text_boxes():
    pmap = probability_map((20, 30, 60, 10, 0.9), (120, 60, 40, 12, 0.4))
    decoder_ = create_decoder("segmentation", {"type": "db_text", "output": "maps", "unclip_ratio": 1.5}, 2)
    labels = decoder_.decode({"maps": pmap}, GEOMETRY, at_source=True)
    # the first region grown as in test_a_text_region_becomes_its_grown_rectangle; the 0.4 one is
    # under box_threshold 0.5 and stays background, like the rest of the image
    distance = 59 * 9 * 1.5 / (2 * (59 + 9))
    x1, y1, x2, y2 = 49.5 - 29.5 - distance, 34.5 - 4.5 - distance, 49.5 + 29.5 + distance, 34.5 + 4.5 + distance
    expected = np.zeros((100, 200), np.uint8)
    expected[round(y1) : round(y2) + 1, round(x1) : round(x2) + 1] = 1
    assert labels.dtype == np.uint8 and labels.shape == (100, 200)
    np.testing.assert_array_equal(labels, expected)  # corners rounded to whole pixels, filled
    assert labels[34, 49] == 1 and labels[66, 140] == 0 and labels[90, 10] == 0
    assert np.count_nonzero(labels) > np.count_nonzero(pmap[0, 0] > 0.8)  # more than the kernel: the text boxes
