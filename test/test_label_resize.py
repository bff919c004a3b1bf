"""Label maps brought to source / network size against ``cv2.resize`` with INTER_NEAREST_EXACT
(the reference is OpenCV itself; ``resize_labels`` resizes columns and repeats rows)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from trt_perception.decoders.segmentation import resize_labels, resize_to_output
from trt_perception.geometry import ResizeGeometry


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize(
    ("source", "size"),
    [((256, 256), (1080, 1920)), ((736, 1312), (1080, 1920)), ((37, 53), (480, 640)), ((256, 256), (100, 120)),
     ((64, 64), (64, 200)), ((200, 64), (720, 64)), ((1, 1), (5, 7)), ((9, 9), (9, 9))],
)
def test_resize_labels_equals_opencv(source: tuple[int, int], size: tuple[int, int], dtype) -> None:
    labels = np.random.default_rng().integers(0, 300 if dtype == np.uint16 else 256, source).astype(dtype)
    expected = cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)
    actual = resize_labels(labels, size)
    assert actual.dtype == labels.dtype and actual.flags.c_contiguous
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("at_source", [True, False])
def test_resize_to_output_of_labels_equals_opencv(at_source: bool) -> None:
    geometry = ResizeGeometry.letterbox((1080, 1920), (512, 512), "centered")
    labels = np.random.default_rng().integers(0, 21, (128, 128)).astype(np.uint8)
    if at_source:
        # by hand: 1920x1080 fills 512x288 of the 512x512 input from row 112 on, rows 28..100 of a 128x128 map
        expected = cv2.resize(labels[28:100, :], (1920, 1080), interpolation=cv2.INTER_NEAREST_EXACT)
    else:
        expected = cv2.resize(labels, (512, 512), interpolation=cv2.INTER_NEAREST_EXACT)
    np.testing.assert_array_equal(resize_to_output(labels, geometry, at_source), expected)
