"""GPU twin of ``decoders.filter_detections``: score threshold, class allow-list, NMS and top-k on
device arrays, so only the kept boxes travel back to the host, packed into one array."""

from __future__ import annotations

from typing import Any

import numpy as np

from trt_perception.decoders import DetectionFilter
from trt_perception.gpu._cupy import array_module, require_cupy
from trt_perception.gpu.kernels import postprocess_module
from trt_perception.results import Detections

_NMS_THREADS = 256


# Columns of a packed detection row: x1, y1, x2, y2, score, class id (float64 holds float32 values
# and class ids below 2**53 exactly).
PACKED_COLUMNS = 6


def pack_detections(boxes: Any, scores: Any, class_ids: Any) -> Any:
    """Boxes ``Nx4``, scores ``N`` and class ids ``N`` (numpy or CuPy) as one float64 ``Nx6``
    array of the same module, so that kept detections cross to the host in one copy."""
    xp = array_module(boxes)
    packed = xp.empty((len(scores), PACKED_COLUMNS), xp.float64)
    packed[:, :4] = boxes.reshape(-1, 4)
    packed[:, 4] = scores
    packed[:, 5] = class_ids
    return packed


def unpack_detections(packed: np.ndarray) -> Detections:
    """The ``Detections`` (float32 boxes and scores, int64 class ids) of a host ``pack_detections`` array."""
    return Detections(packed[:, :4], packed[:, 4], packed[:, 5].astype(np.int64))


def filter_detections_gpu(boxes: Any, scores: Any, class_ids: Any, detection_filter: DetectionFilter) -> Detections:
    """``filter_detections`` for ``xyxy`` boxes ``Nx4``, scores ``N`` and class ids ``N`` given as
    cupy (or numpy) arrays: the same boxes in the same order, best score first, as host arrays
    (the kept rows come back in one packed copy)."""
    cupy = require_cupy()
    boxes = cupy.asarray(boxes, dtype=cupy.float32).reshape(-1, 4)
    scores = cupy.asarray(scores, dtype=cupy.float32).reshape(-1)
    class_ids = cupy.asarray(class_ids, dtype=cupy.int64).reshape(-1)
    keep = scores >= detection_filter.score_threshold
    if detection_filter.allowed_class_ids is not None:
        allowed = cupy.asarray(sorted(detection_filter.allowed_class_ids), dtype=cupy.int64)
        keep &= cupy.isin(class_ids, allowed)
    inverted = keep & ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    candidates = cupy.flatnonzero(keep & ~inverted)
    order = candidates[cupy.argsort(-scores[candidates])]  # CuPy's sort is stable, as the CPU's
    if detection_filter.nms_iou is None:
        order = order[: detection_filter.max_detections]
    elif len(order):
        order = order[_nms_positions(cupy, boxes[order], class_ids[order], detection_filter)]
    kept = unpack_detections(cupy.asnumpy(pack_detections(boxes[order], scores[order], class_ids[order])))
    kept.inverted_left_out = int(inverted.sum())
    return kept


def _nms_positions(cupy: Any, sorted_boxes: Any, sorted_classes: Any, detection_filter: DetectionFilter) -> Any:
    """Positions (into the score-sorted arrays) of the boxes greedy NMS keeps, in order."""
    count = len(sorted_boxes)
    suppressed = cupy.zeros(count, cupy.uint8)
    kept = cupy.empty(count, cupy.int32)
    kept_count = cupy.zeros(1, cupy.int32)
    assert detection_filter.nms_iou is not None
    postprocess_module("float32", "uint8").get_function("nms_sorted")(
        (1,), (_NMS_THREADS,),
        (cupy.ascontiguousarray(sorted_boxes, dtype=cupy.float64), cupy.ascontiguousarray(sorted_classes),
         np.int32(count), np.float64(detection_filter.nms_iou), np.int32(detection_filter.class_agnostic),
         np.int32(detection_filter.max_detections), suppressed, kept, kept_count),
    )
    return kept[: int(kept_count[0])]
