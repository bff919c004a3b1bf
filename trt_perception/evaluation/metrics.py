"""Accuracy and latency metrics accumulated frame by frame.

Segmentation: a confusion matrix (rows = ground truth, columns = prediction) summed over frames, so
memory stays constant however long the recording is. Per-class IoU is ``TP / (TP + FP + FN)``;
classes absent from both ground truth and prediction have no IoU (NaN) and do not enter mIoU.
Pixels whose ground truth equals ``ignore_index`` are left out of everything.

Detection: COCO box metrics by the COCO protocol (AP@[.5:.95], AP50, AP75, APs, APm, APl, AR@100,
per-class AP) computed by pycocotools' COCOeval from the accumulated boxes (a few numbers per
detection; images are not kept), at most ``COCO_MAX_DETECTIONS`` (100) detections per image, the
best-scoring ones. Classes are matched by name, so ground truth may name classes the model does not
know (they score AP 0) and the model may predict classes missing from the ground truth (COCO leaves
those out of the mean). Areas (for the small / medium / large split) are the ground truth's own
(COCO's ``area``) where given, else ``width * height`` of the box, as pycocotools' ``loadRes``
computes them for detections.

Every accumulator here has ``merge(other)``: merging the accumulators of consecutive parts of a
frame sequence gives bit for bit what one accumulator fed the whole sequence gives.
"""

from __future__ import annotations

import contextlib
import io
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# Boxes are xyxy in pixels throughout this module (N x 4); COCO wants xywh.
Boxes = npt.ArrayLike


# ----------------------------------------------------------------------------- segmentation


def confusion_matrix(
    ground_truth: npt.NDArray[np.integer],
    prediction: npt.NDArray[np.integer],
    num_classes: int,
    ignore_index: int | None = None,
) -> npt.NDArray[np.int64]:
    """``num_classes x num_classes`` pixel counts, rows = ground-truth class, columns = predicted class.

    Raises ValueError when the shapes differ or a label lies outside ``0..num_classes-1`` (other
    than ``ignore_index`` in the ground truth), since such a pixel cannot be scored honestly.
    """
    if ground_truth.shape != prediction.shape:
        raise ValueError(
            f"ground truth {ground_truth.shape} and prediction {prediction.shape} differ in shape"
        )
    truth = ground_truth.reshape(-1).astype(np.int64)
    predicted = prediction.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = truth != ignore_index
        truth, predicted = truth[keep], predicted[keep]
    for what, labels in (("ground truth", truth), ("prediction", predicted)):
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            values = np.unique(labels[bad])[:10].tolist()
            raise ValueError(
                f"{what} holds labels {values} outside 0..{num_classes - 1}"
                + ("" if ignore_index is None else f" (ignore_index {ignore_index})")
            )
    counts = np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationScores:
    """IoU per class (NaN where a class is absent from both), mean IoU and pixel accuracy."""

    class_iou: npt.NDArray[np.float64]
    mean_iou: float
    pixel_accuracy: float
    evaluated_pixels: int


def segmentation_scores(confusion: npt.NDArray[np.integer]) -> SegmentationScores:
    """Scores from a confusion matrix; NaN means undefined (no pixels / class never seen)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        class_iou = np.where(union > 0, true_positive / union, np.nan)
    total = confusion.sum()
    present = ~np.isnan(class_iou)
    return SegmentationScores(
        class_iou=class_iou,
        mean_iou=float(class_iou[present].mean()) if present.any() else math.nan,
        pixel_accuracy=float(true_positive.sum() / total) if total > 0 else math.nan,
        evaluated_pixels=int(total),
    )


class SegmentationMetrics:
    """Confusion matrix summed over frames (constant memory)."""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.frames = 0

    def add_frame(
        self, ground_truth: npt.NDArray[np.integer], prediction: npt.NDArray[np.integer]
    ) -> SegmentationScores:
        """Add one frame's labels; returns that frame's own scores (for ranking frames)."""
        frame = confusion_matrix(ground_truth, prediction, self.num_classes, self.ignore_index)
        self.confusion += frame
        self.frames += 1
        return segmentation_scores(frame)

    def scores(self) -> SegmentationScores:
        """Scores over every frame added so far."""
        return segmentation_scores(self.confusion)

    def merge(self, other: SegmentationMetrics) -> None:
        """Add another accumulator's frames (same classes and ignore index): the confusion matrices add."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge segmentation metrics of {other.num_classes} classes (ignore {other.ignore_index}) "
                f"into {self.num_classes} classes (ignore {self.ignore_index})"
            )
        self.confusion += other.confusion
        self.frames += other.frames


# ----------------------------------------------------------------------------- detection


def box_iou(boxes_a: Boxes, boxes_b: Boxes) -> npt.NDArray[np.float64]:
    """Pairwise IoU of ``xyxy`` boxes, shape ``len(a) x len(b)``."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / union, 0.0)


def frame_detection_errors(
    gt_boxes: Boxes,
    gt_classes: Sequence[str],
    boxes: Boxes,
    scores: npt.ArrayLike,
    classes: Sequence[str],
    iou_threshold: float = 0.5,
) -> int:
    """Misses plus false positives in one frame (greedy by score, same class, IoU >= threshold).

    Used to rank frames for the report's "worst frames"; the COCO metrics do their own matching.
    """
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    ious = box_iou(boxes, gt_boxes)
    matched = np.zeros(len(gt_classes), bool)
    false_positives = 0
    for det in order:
        candidates = [
            gt for gt in range(len(gt_classes))
            if not matched[gt] and gt_classes[gt] == classes[det] and ious[det, gt] >= iou_threshold
        ]
        if candidates:
            matched[max(candidates, key=lambda gt: ious[det, gt])] = True
        else:
            false_positives += 1
    return false_positives + int((~matched).sum())


COCO_MAX_DETECTIONS = 100  # the COCO protocol scores at most this many detections per image


@dataclass(frozen=True)
class DetectionScores:
    """COCO box metrics with COCOeval's semantics (mean over valid entries); NaN where undefined.

    AP values average over IoU thresholds 0.5:0.95 unless named otherwise, at most 100 detections
    per image; ``ap_small`` / ``ap_medium`` / ``ap_large`` restrict ground truth and detections to
    areas below 32², between 32² and 96², above 96² pixels; ``ar100`` is the recall at 100
    detections per image averaged over IoU thresholds and classes.
    """

    mean_ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    ar100: float
    class_ap: dict[str, float]
    frames: int
    ground_truth_boxes: int
    detections: int


class DetectionMetrics:
    """Boxes accumulated per frame, scored with pycocotools' COCOeval at the end.

    Each box is kept as one compact numeric row (no images, no per-box Python objects) until
    ``scores()`` builds the COCO structures. Of each frame's detections only the
    ``COCO_MAX_DETECTIONS`` best-scoring ones are kept (the COCO protocol's limit per image).
    """

    def __init__(self) -> None:
        self.frames = 0
        self._category_ids: dict[str, int] = {}
        # rows of [image_id, category_id, x1, y1, x2, y2, area, iscrowd] and [..., area, score], one array per frame
        self._truth_rows: list[npt.NDArray[np.float64]] = []
        self._detection_rows: list[npt.NDArray[np.float64]] = []

    def add_frame(
        self,
        gt_boxes: Boxes,
        gt_classes: Sequence[str],
        boxes: Boxes,
        scores: npt.ArrayLike,
        classes: Sequence[str],
        gt_crowd: Sequence[bool] | None = None,
        gt_areas: npt.ArrayLike | None = None,
    ) -> None:
        """Add one frame: ground-truth boxes with class names, detections with scores and class names.

        Boxes are ``xyxy`` in source pixels. ``gt_crowd`` marks COCO ``iscrowd`` regions;
        ``gt_areas`` are COCO's object areas (default: box areas).
        """
        truth_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        det_boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        det_scores = np.asarray(scores, np.float64).reshape(-1)
        if len(truth_boxes) != len(gt_classes):
            raise ValueError(f"{len(truth_boxes)} ground-truth boxes but {len(gt_classes)} classes")
        if not len(det_boxes) == len(det_scores) == len(classes):
            raise ValueError(
                f"{len(det_boxes)} boxes, {len(det_scores)} scores, {len(classes)} classes differ in length"
            )
        if len(det_scores) > COCO_MAX_DETECTIONS:
            best = np.argsort(-det_scores, kind="stable")[:COCO_MAX_DETECTIONS]
            det_boxes, det_scores = det_boxes[best].reshape(-1, 4), det_scores[best].reshape(-1)
            classes = [classes[i] for i in best]
        crowd = np.zeros(len(truth_boxes)) if gt_crowd is None else np.asarray(gt_crowd, np.float64)
        truth_areas = _box_areas(truth_boxes) if gt_areas is None else np.asarray(gt_areas, np.float64).reshape(-1)
        if len(crowd) != len(truth_boxes) or len(truth_areas) != len(truth_boxes):
            raise ValueError(f"{len(truth_boxes)} ground-truth boxes but {len(crowd)} crowd flags, {len(truth_areas)} areas")
        self.frames += 1
        for rows, table_boxes, names, areas, last in (
            (self._truth_rows, truth_boxes, gt_classes, truth_areas, crowd),
            (self._detection_rows, det_boxes, classes, _box_areas(det_boxes), det_scores),
        ):
            if len(names):
                categories = [self._category_ids.setdefault(str(n), len(self._category_ids) + 1) for n in names]
                image_ids = np.full(len(names), self.frames)
                rows.append(np.column_stack([image_ids, categories, table_boxes, areas, last]))

    def merge(self, other: DetectionMetrics) -> None:
        """Append another accumulator's frames after this one's (as if they had been added here)."""
        category_of = np.zeros(len(other._category_ids) + 1)
        for name, other_id in other._category_ids.items():  # other's first-seen order, as one stream would
            category_of[other_id] = self._category_ids.setdefault(name, len(self._category_ids) + 1)
        for mine, theirs in ((self._truth_rows, other._truth_rows), (self._detection_rows, other._detection_rows)):
            for rows in theirs:
                moved = rows.copy()
                moved[:, 0] += self.frames
                moved[:, 1] = category_of[rows[:, 1].astype(np.int64)]
                mine.append(moved)
        self.frames += other.frames

    def scores(self) -> DetectionScores:
        """COCO metrics and AP per ground-truth class over all frames so far."""
        names = {cat_id: name for name, cat_id in self._category_ids.items()}
        truth, detections = _stacked(self._truth_rows), _stacked(self._detection_rows)
        gt_category_ids = sorted({int(c) for c in truth[:, 1]})
        if not gt_category_ids:
            nan = math.nan
            return DetectionScores(nan, nan, nan, nan, nan, nan, nan, {}, self.frames, 0, len(detections))
        evaluation = self._coco_evaluation(truth, detections, gt_category_ids)
        iou_thresholds = evaluation.params.iouThrs
        # COCOeval: precision [iou, recall, class, area, max dets], recall [iou, class, area, max dets];
        # areas: all, small, medium, large; the last max-dets entry is 100
        precision = evaluation.eval["precision"][..., -1]
        recall = evaluation.eval["recall"][..., -1]

        def mean_valid(values: npt.NDArray[np.float64]) -> float:
            valid = values[values > -1]
            return float(np.mean(valid)) if valid.size else math.nan

        return DetectionScores(
            mean_ap=mean_valid(precision[..., 0]),
            ap50=mean_valid(precision[iou_thresholds == 0.5][..., 0]),
            ap75=mean_valid(precision[iou_thresholds == 0.75][..., 0]),
            ap_small=mean_valid(precision[..., 1]),
            ap_medium=mean_valid(precision[..., 2]),
            ap_large=mean_valid(precision[..., 3]),
            ar100=mean_valid(recall[..., 0]),
            class_ap={
                names[cat_id]: mean_valid(precision[:, :, k, 0])
                for k, cat_id in enumerate(gt_category_ids)
            },
            frames=self.frames,
            ground_truth_boxes=len(truth),
            detections=len(detections),
        )

    def _coco_evaluation(
        self, truth: npt.NDArray[np.float64], detections: npt.NDArray[np.float64], category_ids: list[int]
    ) -> Any:
        """COCOeval evaluated and accumulated (default parameters: 100 detections, COCO's areas)."""
        from pycocotools.cocoeval import COCOeval

        images = [{"id": image_id} for image_id in range(1, self.frames + 1)]
        categories = [{"id": cat_id} for cat_id in self._category_ids.values()]
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            ground_truth = _coco_dataset(images, categories, _annotations(truth, "iscrowd"))
            results = _coco_dataset(images, categories, _annotations(detections, "score"))
            evaluation = COCOeval(ground_truth, results, iouType="bbox")
            evaluation.params.catIds = category_ids
            evaluation.evaluate()
            evaluation.accumulate()
        return evaluation


def _stacked(rows: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    return np.concatenate(rows) if rows else np.zeros((0, 8))


def _box_areas(boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``width * height`` of ``xyxy`` boxes (negative sides count as 0)."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _annotations(table: npt.NDArray[np.float64], last_column: str) -> list[dict]:
    """COCO annotation dicts (``bbox`` as xywh) from rows ``[image, category, x1, y1, x2, y2, area, last]``."""
    annotations = []
    for ann_id, (image_id, category_id, x1, y1, x2, y2, area, last) in enumerate(table.tolist(), start=1):
        width, height = max(0.0, x2 - x1), max(0.0, y2 - y1)
        annotation = {
            "id": ann_id, "image_id": int(image_id), "category_id": int(category_id),
            "bbox": [x1, y1, width, height], "area": area, "iscrowd": 0,
        }
        annotation[last_column] = int(last) if last_column == "iscrowd" else last
        annotations.append(annotation)
    return annotations


def _coco_dataset(images: list[dict], categories: list[dict], annotations: list[dict]):  # noqa: ANN202
    """A pycocotools COCO object built in memory (no json round trip, empty annotations allowed)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    coco.createIndex()
    return coco


# ----------------------------------------------------------------------------- latency


class LatencyStats:
    """Per-stage milliseconds of every frame (8 bytes per stage and frame), summarized as percentiles."""

    def __init__(self) -> None:
        self._milliseconds: dict[str, array[float]] = {}

    def add(self, milliseconds: dict[str, float]) -> None:
        """Add one frame's stage timings (stage name -> ms)."""
        for stage, value in milliseconds.items():
            self._milliseconds.setdefault(stage, array("d")).append(float(value))

    def merge(self, other: LatencyStats) -> None:
        """Append another accumulator's frames (per-frame values, so percentiles stay exact)."""
        for stage, values in other._milliseconds.items():
            self._milliseconds.setdefault(stage, array("d")).extend(values)

    @property
    def stages(self) -> list[str]:
        """Stage names in first-seen order."""
        return list(self._milliseconds)

    def values(self, stage: str) -> npt.NDArray[np.float64]:
        """All recorded milliseconds of one stage."""
        return np.asarray(self._milliseconds.get(stage, []), np.float64)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"p50", "p90", "p99", "mean", "count"}}`` in milliseconds."""
        result = {}
        for stage, values in self._milliseconds.items():
            array = np.asarray(values, np.float64)
            p50, p90, p99 = np.percentile(array, [50, 90, 99])
            result[stage] = {
                "p50": float(p50), "p90": float(p90), "p99": float(p99),
                "mean": float(array.mean()), "count": int(array.size),
            }
        return result
