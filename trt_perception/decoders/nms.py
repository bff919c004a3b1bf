"""Greedy non-maximum suppression and the run-time detection filter (threshold, NMS, top-k, classes)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.decoders.params import is_finite_number
from trt_perception.errors import SpecError
from trt_perception.results import Detections

# OpenCV's NMS compares a float32-rounded IoU (error ~1e-7) with a float32 threshold: run at the
# threshold -/+ this margin, equal results mean no decision depended on the rounding.
_OPENCV_IOU_MARGIN = 1e-6
# OpenCV treats two boxes whose areas sum to (almost) zero as overlapping completely, whatever their
# positions or classes, where an IoU with zero union is 0 here: two such boxes go to the numpy loop.
_OPENCV_EMPTY_AREA = 1e-9
# With a limit on the kept boxes, OpenCV first looks at this many best-scored boxes per box wanted.
_PREFIX_PER_KEPT = 2


def nms(
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike,
    iou_threshold: float,
    class_ids: npt.ArrayLike | None = None,
    max_output: int | None = None,
) -> npt.NDArray[np.int64]:
    """Indices of the boxes kept by greedy NMS, best score first.

    Boxes are ``xyxy``. Going down the scores (ties: lower index first), a box is dropped when its IoU
    with an already kept box exceeds ``iou_threshold``. With ``class_ids`` only boxes of the same class
    suppress each other (each class is shifted to its own disjoint region, so one pass handles all).
    Stops after ``max_output`` kept boxes, which gives the same result as truncating afterwards.
    """
    coords = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    score_values = np.asarray(scores).reshape(-1)
    if len(coords) != len(score_values):
        raise ValueError(f"nms: {len(coords)} boxes but {len(score_values)} scores")
    if len(coords) == 0:
        return np.zeros(0, np.int64)
    limit = len(coords) if max_output is None else max_output
    fast = _opencv_nms(coords, score_values, iou_threshold, class_ids, limit)
    if fast is not None:
        return fast[:limit]
    order = np.argsort(-score_values, kind="stable")
    if class_ids is not None:
        classes = np.asarray(class_ids).reshape(-1)
        span = np.ceil(coords.max() - coords.min()) + 1
        coords += (classes.astype(np.float64) * span)[:, None]
    x1, y1, x2, y2 = (np.ascontiguousarray(column) for column in coords[order].T)
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    kept: list[int] = []
    remaining = np.arange(len(order))
    while remaining.size and len(kept) < limit:
        best, rest = remaining[0], remaining[1:]
        kept.append(int(best))
        width = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = width * height
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        remaining = rest[iou <= iou_threshold]
    return order[np.array(kept, dtype=np.int64)].astype(np.int64)


def _opencv_nms(
    coords: npt.NDArray[np.float64],
    scores: npt.NDArray,
    iou_threshold: float,
    class_ids: npt.ArrayLike | None,
    limit: int | None = None,
) -> npt.NDArray[np.int64] | None:
    """``nms``'s result from OpenCV's C++ NMS (``cv2.dnn.NMSBoxes`` / ``NMSBoxesBatched``, same
    order and tie rule), or None where it could differ: float64 scores (OpenCV sorts float32), scores
    <= 0 (OpenCV's score threshold cannot go below 0 and drops them), an IoU threshold within the
    margin of 0 or 1, inverted boxes, two empty boxes, or a decision within ``_OPENCV_IOU_MARGIN`` of
    the threshold (the runs just below and just above the threshold disagree). ``NMSBoxesBatched``
    shifts each class by its index times the largest coordinate + 1, which keeps classes apart only
    for coordinates >= 0: the boxes are moved there first (exact in float64, IoUs unchanged).

    With ``limit`` (at least the first ``limit`` kept boxes are right) OpenCV first looks at only the
    ``_PREFIX_PER_KEPT * limit`` best-scored boxes (its ``top_k``): greedy NMS decides each box from
    the boxes kept before it, so a run over the best ``m`` keeps exactly the full run's kept boxes
    among them, and when that is ``limit`` or more their first ``limit`` are the full run's. Fewer:
    the full run follows. Each run compares every box with every box kept before it, so for many
    candidates and a small limit this is several times less work."""
    if not _OPENCV_IOU_MARGIN <= iou_threshold <= 1 - _OPENCV_IOU_MARGIN:
        return None
    widths, heights = coords[:, 2] - coords[:, 0], coords[:, 3] - coords[:, 1]
    if scores.dtype != np.float32 or scores.min() <= 0 or not np.isfinite(coords).all() or min(widths.min(), heights.min()) < 0:
        return None
    if np.count_nonzero(widths * heights <= _OPENCV_EMPTY_AREA) > 1:
        return None
    rects: Any = np.column_stack([coords[:, :2] - coords[:, :2].min(), widths, heights])  # OpenCV takes arrays as they are
    scores_any: Any = scores
    classes: Any = None if class_ids is None else np.asarray(class_ids).reshape(-1)
    if classes is not None:
        if len(classes) and np.abs(classes).max() >= 2**31:  # OpenCV takes int32 class ids
            return None
        classes = classes.astype(np.int32)
    top_k = _PREFIX_PER_KEPT * limit if limit is not None and _PREFIX_PER_KEPT * limit < len(scores) else 0
    while True:  # top_k 0: every box
        results = []
        for threshold in (iou_threshold - _OPENCV_IOU_MARGIN, iou_threshold + _OPENCV_IOU_MARGIN):
            if classes is None:
                kept = cv2.dnn.NMSBoxes(rects, scores_any, 0.0, threshold, top_k=top_k)
            else:
                kept = cv2.dnn.NMSBoxesBatched(rects, scores_any, classes, 0.0, threshold, top_k=top_k)
            results.append(np.asarray(kept, np.int64).reshape(-1))
        if not np.array_equal(results[0], results[1]):
            return None
        if top_k == 0 or limit is None or len(results[0]) >= limit:
            return results[0]
        top_k = 0


@dataclass(frozen=True)
class DetectionFilter:
    """What to keep of a detector's output; may be replaced at run time.

    ``nms_iou`` None skips host NMS (models with their own NMS, DETR). ``allowed_class_ids`` None
    keeps every class. Invalid values raise ``SpecError`` naming ``detection.<field>``.
    """

    score_threshold: float = 0.3
    nms_iou: float | None = 0.45
    class_agnostic: bool = False
    max_detections: int = 100
    allowed_class_ids: frozenset[int] | None = None

    def __post_init__(self) -> None:
        if not is_finite_number(self.score_threshold):
            raise SpecError(
                f"detection.score_threshold: expected a finite number, got {self.score_threshold!r}"
            )
        if self.nms_iou is not None and not (is_finite_number(self.nms_iou) and 0 <= self.nms_iou <= 1):
            raise SpecError(f"detection.nms_iou: expected null or a number in [0, 1], got {self.nms_iou!r}")
        if not isinstance(self.class_agnostic, bool):
            raise SpecError(f"detection.class_agnostic: expected true or false, got {self.class_agnostic!r}")
        if (
            isinstance(self.max_detections, bool)
            or not isinstance(self.max_detections, int)
            or self.max_detections < 1
        ):
            raise SpecError(
                f"detection.max_detections: expected an integer >= 1, got {self.max_detections!r}"
            )
        if self.allowed_class_ids is not None:
            object.__setattr__(self, "allowed_class_ids", _class_id_set(self.allowed_class_ids))


def _class_id_set(values: Iterable[int]) -> frozenset[int]:
    ids = list(values)
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in ids):
        raise SpecError(f"detection.classes: expected class indices >= 0, got {ids!r}")
    return frozenset(int(v) for v in ids)


def filter_detections(detections: Detections, detection_filter: DetectionFilter) -> Detections:
    """Apply score threshold, class allow-list, NMS and the detection limit; best score first.

    Boxes with negative width or height (a decoding error, e.g. a wrong box format in the spec) are
    left out before NMS and counted in the result's ``inverted_left_out``.
    """
    keep = detections.scores >= detection_filter.score_threshold
    if detection_filter.allowed_class_ids is not None:
        keep &= np.isin(detections.class_ids, np.fromiter(detection_filter.allowed_class_ids, np.int64))
    boxes = detections.boxes
    inverted = keep & ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    candidates = detections.select(keep & ~inverted)
    if detection_filter.nms_iou is None:
        order = np.argsort(-candidates.scores, kind="stable")[: detection_filter.max_detections]
    else:
        order = nms(
            candidates.boxes,
            candidates.scores,
            detection_filter.nms_iou,
            None if detection_filter.class_agnostic else candidates.class_ids,
            detection_filter.max_detections,
        )
    kept = candidates.select(order)
    kept.inverted_left_out = int(inverted.sum())
    return kept
