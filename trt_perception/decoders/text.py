"""DBNet text maps (PP-OCR, PaddleOCR's text detectors) to text boxes, as PaddleOCR's DB post-processing.

For each connected region of ``probability > threshold`` (the map dilated by 2x2 when ``dilate``):
the minimum-area rectangle of its contour (skipped when its short side is below ``min_size``), the
box score = mean probability inside that rectangle (the detection filter's ``score_threshold`` is
PaddleOCR's ``box_thresh``), the rectangle grown outward by ``area * unclip_ratio / perimeter`` on
every side (PaddleOCR offsets the polygon with round joins; for a rectangle the minimum-area
rectangle of that offset is the rectangle grown by the same distance, which is what is computed
here), skipped when its short side is below ``min_size + 2``. ``DbTextDecoder`` (detection) gives
the axis-aligned envelopes of the grown rectangles, in network-input pixels; ``DbTextRegionsDecoder``
(segmentation) a label image with the grown rectangles filled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.decoders.detection import DetectionDecoder
from trt_perception.decoders.params import DecoderParams
from trt_perception.decoders.segmentation import SegmentationDecoder, check_mask_labels, resize_to_output
from trt_perception.decoders.tensors import finite_range, select_output, single_channel_map
from trt_perception.geometry import ResizeGeometry

_DILATION_KERNEL = np.ones((2, 2), np.uint8)


@dataclass(frozen=True)
class TextBoxSettings:
    """PaddleOCR's DB post-processing parameters (``box_thresh`` aside)."""

    threshold: float
    unclip_ratio: float
    min_size: float
    max_candidates: int
    dilate: bool

    @classmethod
    def from_params(cls, params: DecoderParams) -> TextBoxSettings:
        """``threshold`` [0.3], ``unclip_ratio`` [1.5], ``min_size`` [3], ``max_candidates`` [1000], ``dilate`` [false]."""
        return cls(
            threshold=params.number("threshold", 0.3, 0.0, 1.0),
            unclip_ratio=params.number("unclip_ratio", 1.5, 0.0),
            min_size=params.number("min_size", 3.0, 0.0),
            max_candidates=params.integer("max_candidates", 1000, 1),
            dilate=params.boolean("dilate", False),
        )


def _probability_map(outputs: Mapping[str, Any], output: str | None) -> npt.NDArray[np.float32]:
    """The ``HxW`` text probability of batch item 0, checked finite."""
    name, tensor = select_output(outputs, output, "decoder.output")
    probability = np.asarray(single_channel_map(name, np.asarray(tensor)), np.float32)
    finite_range(name, probability)
    return probability


@dataclass
class DbTextDecoder(DetectionDecoder):
    """Text boxes from a DBNet probability map ``[B,1,H,W]`` / ``[B,H,W,1]`` / ``[B,H,W]`` (class 0)."""

    output: str | None
    settings: TextBoxSettings
    device_exact: ClassVar[bool] = False  # contours run on the host

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> DbTextDecoder:
        """Build from ``output`` and the ``TextBoxSettings`` keys."""
        return cls(class_offset=0, num_classes=num_classes, output=params.optional_string("output"),
                   settings=TextBoxSettings.from_params(params))

    def decode_arrays(
        self, outputs: Mapping[str, Any], geometry: ResizeGeometry, score_threshold: float
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        rectangles = text_rectangles(_probability_map(outputs, self.output), self.settings, score_threshold)
        boxes = np.array([_envelope(rectangle) for rectangle, _ in rectangles], np.float32).reshape(-1, 4)
        scores = np.array([score for _, score in rectangles], np.float32)
        return boxes, scores, np.zeros(len(scores), np.int64)


@dataclass
class DbTextRegionsDecoder(SegmentationDecoder):
    """Label image of the text boxes (label 1 inside each grown text rectangle) instead of DBNet's
    shrunk text kernel; ``box_threshold`` [0.5] is PaddleOCR's ``box_thresh``."""

    settings: TextBoxSettings
    box_threshold: float

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> DbTextRegionsDecoder:
        """Build from ``output``, ``box_threshold`` and the ``TextBoxSettings`` keys."""
        check_mask_labels(num_classes, "db_text")
        return cls(output=params.optional_string("output"), num_classes=2, settings=TextBoxSettings.from_params(params),
                   box_threshold=params.number("box_threshold", 0.5, 0.0, 1.0))

    def decode(
        self, outputs: Mapping[str, npt.NDArray], geometry: ResizeGeometry, at_source: bool
    ) -> npt.NDArray[np.unsignedinteger]:
        probability = _probability_map(outputs, self.output)
        labels = np.zeros(probability.shape, np.uint8)
        for rectangle, _ in text_rectangles(probability, self.settings, self.box_threshold):
            cv2.fillPoly(labels, [np.rint(cv2.boxPoints(rectangle)).astype(np.int32)], 1)
        return resize_to_output(labels, geometry, at_source)


Rectangle = tuple[tuple[float, float], tuple[float, float], float]  # cv2.minAreaRect: centre, size, angle


def text_rectangles(
    probability: npt.NDArray[np.float32], settings: TextBoxSettings, box_threshold: float
) -> list[tuple[Rectangle, float]]:
    """The grown text rectangles of a ``HxW`` probability map with their box scores (>= ``box_threshold``)."""
    bitmap: npt.NDArray = (probability > settings.threshold).astype(np.uint8)
    if settings.dilate:
        bitmap = cv2.dilate(bitmap, _DILATION_KERNEL)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    found = []
    for contour in contours[: settings.max_candidates]:
        (centre_x, centre_y), (width, height), angle = cv2.minAreaRect(contour)
        rectangle: Rectangle = ((centre_x, centre_y), (width, height), angle)
        if min(width, height) < settings.min_size:
            continue
        score = box_score(probability, np.asarray(cv2.boxPoints(rectangle), np.float32))
        if score < box_threshold:
            continue
        grown = grow_rectangle(rectangle, settings.unclip_ratio)
        if min(grown[1]) < settings.min_size + 2:
            continue
        found.append((grown, score))
    return found


def box_score(probability: npt.NDArray[np.float32], corners: npt.NDArray[np.float32]) -> float:
    """Mean of ``probability`` over the pixels of the polygon ``corners`` (Nx2, x/y), PaddleOCR's
    "fast" score: the polygon rasterized with integer-truncated corners inside its bounding box."""
    height, width = probability.shape
    x_low = int(np.clip(np.floor(corners[:, 0].min()), 0, width - 1))
    x_high = int(np.clip(np.ceil(corners[:, 0].max()), 0, width - 1))
    y_low = int(np.clip(np.floor(corners[:, 1].min()), 0, height - 1))
    y_high = int(np.clip(np.ceil(corners[:, 1].max()), 0, height - 1))
    mask = np.zeros((y_high - y_low + 1, x_high - x_low + 1), np.uint8)
    shifted = (corners - np.array([x_low, y_low], np.float32)).astype(np.int32)
    cv2.fillPoly(mask, [shifted], 1)
    return float(cv2.mean(probability[y_low : y_high + 1, x_low : x_high + 1], mask)[0])


def grow_rectangle(rectangle: Rectangle, ratio: float) -> Rectangle:
    """``rectangle`` grown outward on every side by DBNet's unclip distance ``area * ratio / perimeter``."""
    centre, (width, height), angle = rectangle
    perimeter = 2.0 * (width + height)
    distance = width * height * ratio / perimeter if perimeter > 0 else 0.0
    return centre, (width + 2.0 * distance, height + 2.0 * distance), angle


def _envelope(rectangle: Rectangle) -> tuple[float, float, float, float]:
    """Axis-aligned ``x1, y1, x2, y2`` around a rotated rectangle."""
    corners = cv2.boxPoints(rectangle)
    return (
        float(corners[:, 0].min()),
        float(corners[:, 1].min()),
        float(corners[:, 0].max()),
        float(corners[:, 1].max()),
    )
