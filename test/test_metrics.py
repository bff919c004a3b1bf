"""Segmentation and detection metrics against independent computations and hand-worked cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from coco_reference import best_per_image, pycocotools_stats, xywh
from trt_perception.evaluation.metrics import (
    DetectionMetrics,
    LatencyStats,
    SegmentationMetrics,
    box_iou,
    confusion_matrix,
    frame_detection_errors,
)

# ----------------------------------------------------------------------------- segmentation


def masks_iou(truth: np.ndarray, prediction: np.ndarray, cls: int, valid: np.ndarray) -> float:
    """IoU of one class from boolean masks; NaN when the class is in neither."""
    in_truth = (truth == cls) & valid
    in_prediction = (prediction == cls) & valid
    union = (in_truth | in_prediction).sum()
    return float((in_truth & in_prediction).sum() / union) if union else math.nan


@pytest.mark.parametrize("seed", range(5))
def test_segmentation_metrics_match_boolean_mask_computation_over_frames(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes, ignore_index = 6, 255
    metrics = SegmentationMetrics(num_classes, ignore_index=ignore_index)
    truths, predictions = [], []
    for _ in range(4):
        shape = tuple(rng.integers(5, 40, size=2))
        # class 5 never appears anywhere; class 4 only in predictions
        truth = rng.integers(0, 4, size=shape).astype(np.uint8)
        truth[rng.random(shape) < 0.1] = ignore_index
        prediction = rng.integers(0, 5, size=shape).astype(np.uint8)
        metrics.add_frame(truth, prediction)
        truths.append(truth.ravel())
        predictions.append(prediction.ravel())
    truth, prediction = np.concatenate(truths), np.concatenate(predictions)
    valid = truth != ignore_index

    scores = metrics.scores()

    expected_iou = [masks_iou(truth, prediction, c, valid) for c in range(num_classes)]
    np.testing.assert_allclose(scores.class_iou, expected_iou, equal_nan=True)
    assert math.isnan(scores.class_iou[5]) and scores.class_iou[4] == 0.0
    assert scores.mean_iou == pytest.approx(np.mean(expected_iou[:5]))
    assert scores.pixel_accuracy == pytest.approx((truth[valid] == prediction[valid]).mean())
    assert scores.evaluated_pixels == valid.sum()
    assert metrics.frames == 4


def test_confusion_matrix_rows_are_truth_and_columns_prediction() -> None:
    truth = np.array([[0, 0, 1], [1, 2, 2]])
    prediction = np.array([[0, 1, 1], [2, 2, 2]])
    expected = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 2]])
    np.testing.assert_array_equal(confusion_matrix(truth, prediction, 3), expected)


def test_frame_scores_are_that_frame_only() -> None:
    metrics = SegmentationMetrics(2)
    metrics.add_frame(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    frame = metrics.add_frame(np.ones((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    assert frame.pixel_accuracy == 0.0 and frame.mean_iou == 0.0
    assert metrics.scores().pixel_accuracy == 0.5


def test_labels_outside_the_classes_are_rejected_not_dropped() -> None:
    with pytest.raises(ValueError, match=r"ground truth holds labels \[7\] outside 0..2"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match=r"prediction holds labels \[3\]"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8), 3)


def test_all_pixels_ignored_gives_undefined_scores() -> None:
    metrics = SegmentationMetrics(3, ignore_index=255)
    metrics.add_frame(np.full((3, 3), 255, np.uint8), np.zeros((3, 3), np.uint8))
    scores = metrics.scores()
    assert math.isnan(scores.mean_iou) and math.isnan(scores.pixel_accuracy)
    assert scores.evaluated_pixels == 0


# ----------------------------------------------------------------------------- detection


def test_perfect_detection_scores_one() -> None:
    metrics = DetectionMetrics()
    metrics.add_frame([[10, 20, 110, 220]], ["cat"], [[10, 20, 110, 220]], [0.9], ["cat"])
    metrics.add_frame([[5, 5, 50, 60], [60, 60, 90, 90]], ["dog", "cat"],
                      [[60, 60, 90, 90], [5, 5, 50, 60]], [0.4, 0.7], ["cat", "dog"])
    scores = metrics.scores()
    assert (scores.mean_ap, scores.ap50, scores.ap75) == pytest.approx((1.0, 1.0, 1.0))
    assert scores.class_ap == pytest.approx({"cat": 1.0, "dog": 1.0})
    assert (scores.frames, scores.ground_truth_boxes, scores.detections) == (2, 3, 3)


def test_false_positive_ranked_above_the_true_positive_halves_ap() -> None:
    # ranks: FP (precision 0, recall 0), TP (precision 1/2, recall 1). COCO's interpolated
    # precision is 1/2 at every recall level 0..1, so AP = 0.5 at every IoU threshold.
    metrics = DetectionMetrics()
    metrics.add_frame([[0, 0, 100, 100]], ["cat"],
                      [[200, 200, 300, 300], [0, 0, 100, 100]], [0.9, 0.8], ["cat", "cat"])
    scores = metrics.scores()
    assert (scores.mean_ap, scores.ap50, scores.ap75) == pytest.approx((0.5, 0.5, 0.5))


def test_half_the_objects_found_gives_51_of_101_recall_points() -> None:
    metrics = DetectionMetrics()
    metrics.add_frame([[0, 0, 10, 10], [50, 50, 70, 70]], ["cat", "cat"], [[0, 0, 10, 10]], [0.5], ["cat"])
    assert metrics.scores().mean_ap == pytest.approx(51 / 101)


def test_box_iou_0775_counts_at_thresholds_up_to_075() -> None:
    # IoU = 77.5 / 100 = 0.775: matched at 0.50 .. 0.75 (6 of 10 thresholds), missed at 0.80 .. 0.95
    metrics = DetectionMetrics()
    metrics.add_frame([[0, 0, 100, 100]], ["cat"], [[0, 0, 100, 77.5]], [0.9], ["cat"])
    scores = metrics.scores()
    assert (scores.ap50, scores.ap75) == pytest.approx((1.0, 1.0))
    assert scores.mean_ap == pytest.approx(0.6)


def test_wrong_class_and_unknown_classes() -> None:
    metrics = DetectionMetrics()
    # right box, wrong class: "animal" missed (AP 0); "bear" has no ground truth and is not averaged
    metrics.add_frame([[0, 0, 100, 100]], ["animal"], [[0, 0, 100, 100]], [0.9], ["bear"])
    metrics.add_frame([[0, 0, 100, 100]], ["cat"], [[0, 0, 100, 100]], [0.9], ["cat"])
    scores = metrics.scores()
    assert scores.class_ap == pytest.approx({"animal": 0.0, "cat": 1.0})
    assert scores.mean_ap == pytest.approx(0.5)


def test_no_ground_truth_or_no_detections() -> None:
    empty = DetectionMetrics()
    empty.add_frame(np.zeros((0, 4)), [], [[0, 0, 5, 5]], [0.5], ["cat"])
    assert math.isnan(empty.scores().mean_ap)
    missed = DetectionMetrics()
    missed.add_frame([[0, 0, 5, 5]], ["cat"], np.zeros((0, 4)), [], [])
    assert missed.scores().mean_ap == 0.0 and missed.scores().class_ap == {"cat": 0.0}


def test_crowd_regions_neither_reward_nor_penalize() -> None:
    metrics = DetectionMetrics()
    metrics.add_frame([[0, 0, 10, 10], [100, 100, 200, 200]], ["cat", "cat"],
                      [[0, 0, 10, 10], [110, 110, 150, 150]], [0.9, 0.95], ["cat", "cat"],
                      gt_crowd=[False, True])
    assert metrics.scores().mean_ap == pytest.approx(1.0)


def reference_coco_ap(frames: list[dict], iou_threshold: float, cls: str) -> float:
    """COCO-style AP for one class and one IoU threshold, written from the COCO definition:
    per image greedy matching by descending score to the best-IoU unmatched ground truth,
    detections of all images ranked by score, precision made monotone, sampled at 101 recalls."""
    hits, ranked_scores, num_truth = [], [], 0
    for frame in frames:
        truth = frame["gt_boxes"][np.asarray(frame["gt_classes"]) == cls]
        pick = np.asarray(frame["classes"]) == cls
        boxes, scores = frame["boxes"][pick], frame["scores"][pick]
        num_truth += len(truth)
        taken = np.zeros(len(truth), bool)
        for det in np.argsort(-scores, kind="mergesort"):
            best, best_iou = -1, iou_threshold
            for gt in range(len(truth)):
                if taken[gt]:
                    continue
                x1, y1 = np.maximum(boxes[det, :2], truth[gt, :2])
                x2, y2 = np.minimum(boxes[det, 2:], truth[gt, 2:])
                inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
                union = np.prod(boxes[det, 2:] - boxes[det, :2]) + np.prod(truth[gt, 2:] - truth[gt, :2]) - inter
                if inter / union >= best_iou:
                    best, best_iou = gt, inter / union
            if best >= 0:
                taken[best] = True
            hits.append(best >= 0)
            ranked_scores.append(scores[det])
    order = np.argsort(-np.asarray(ranked_scores), kind="mergesort")
    hit = np.asarray(hits, float)[order]
    true_pos, false_pos = np.cumsum(hit), np.cumsum(1 - hit)
    recall = true_pos / num_truth
    precision = true_pos / np.maximum(true_pos + false_pos, np.finfo(float).eps)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    sampled = []
    for r in np.linspace(0, 1, 101):
        index = np.searchsorted(recall, r, side="left")
        sampled.append(envelope[index] if index < len(envelope) else 0.0)
    return float(np.mean(sampled))


@pytest.mark.parametrize("seed", range(4))
def test_detection_metrics_match_reference_coco_ap_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ["person", "car", "dog"]
    frames: list[dict] = []
    metrics = DetectionMetrics()
    for _ in range(6):
        num_truth = int(rng.integers(0, 6))
        top_left = rng.uniform(0, 200, (num_truth, 2))
        gt_boxes = np.hstack([top_left, top_left + rng.uniform(10, 80, (num_truth, 2))])
        gt_classes = list(rng.choice(names, num_truth))
        # detections: jittered copies of the truth (some with the wrong class) plus random clutter
        jittered = gt_boxes + rng.normal(0, 6, gt_boxes.shape)
        clutter_tl = rng.uniform(0, 200, (int(rng.integers(0, 5)), 2))
        clutter = np.hstack([clutter_tl, clutter_tl + rng.uniform(10, 80, clutter_tl.shape)])
        boxes = np.vstack([jittered, clutter]).reshape(-1, 4)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        classes = [c if rng.random() > 0.2 else str(rng.choice(names)) for c in gt_classes]
        classes += list(rng.choice(names, len(clutter)))
        det_scores = rng.uniform(0.05, 1.0, len(boxes))
        frames.append({"gt_boxes": gt_boxes, "gt_classes": gt_classes, "boxes": boxes,
                       "scores": det_scores, "classes": classes})
        metrics.add_frame(gt_boxes, gt_classes, boxes, det_scores, classes)

    scores = metrics.scores()

    present = sorted({c for f in frames for c in f["gt_classes"]})
    per_threshold = {
        t: {c: reference_coco_ap(frames, t, c) for c in present} for t in np.linspace(0.5, 0.95, 10)
    }
    for cls in present:
        expected = np.mean([per_threshold[t][cls] for t in per_threshold])
        assert scores.class_ap[cls] == pytest.approx(expected, abs=1e-9), cls
    assert scores.ap50 == pytest.approx(np.mean(list(per_threshold[0.5].values())), abs=1e-9)
    assert scores.mean_ap == pytest.approx(
        np.mean([v for t in per_threshold.values() for v in t.values()]), abs=1e-9
    )


@pytest.mark.parametrize("seed", range(3))
def test_coco_numbers_equal_pycocotools_with_areas_crowds_and_100_per_image(seed: int, tmp_path: Path) -> None:
    """AP, AP50, AP75, APs/m/l and AR@100 equal pycocotools' summarize() on the same boxes, with COCO
    ``area``s unlike the box areas, crowd regions, and 150 detections per image (only 100 count)."""
    rng = np.random.default_rng(seed)
    names = ["person", "car", "dog", "cat"]
    metrics = DetectionMetrics()
    images, annotations, results = [], [], []
    for image_id in range(1, 6):
        count = int(rng.integers(1, 12))
        sides = rng.choice([14.0, 50.0, 160.0], count) * rng.uniform(0.7, 1.3, count)  # small, medium, large
        sizes = np.column_stack([sides, sides * rng.uniform(0.5, 2.0, count)])
        corners = rng.uniform(0, 400, (count, 2))
        truth = np.hstack([corners, corners + sizes])
        classes = list(rng.choice(names, count))
        crowd = rng.random(count) < 0.15
        areas = sizes.prod(axis=1) * rng.uniform(0.4, 1.0, count)  # object areas, smaller than the boxes
        clutter = int(150 - count)
        clutter_corners = rng.uniform(0, 400, (clutter, 2))
        boxes = np.vstack([truth + rng.normal(0, 3, truth.shape),
                           np.hstack([clutter_corners, clutter_corners + rng.uniform(8, 120, (clutter, 2))])])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        det_classes = classes + list(rng.choice(names, clutter))
        scores = np.concatenate([rng.uniform(0.0, 1.0, count), rng.uniform(0.1, 0.9, clutter)])
        metrics.add_frame(truth, classes, boxes, scores, det_classes, gt_crowd=list(crowd), gt_areas=areas)

        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.png"})
        annotations += [
            {"id": len(annotations) + k + 1, "image_id": image_id, "category_id": names.index(classes[k]) + 1,
             "bbox": xywh(truth[k]), "area": float(areas[k]), "iscrowd": int(crowd[k])}
            for k in range(count)
        ]
        results += [{"image_id": image_id, "category_id": names.index(c) + 1, "bbox": xywh(b), "score": float(s)}
                    for b, c, s in zip(boxes, det_classes, scores, strict=True)]
    ground_truth = {"images": images, "annotations": annotations,
                    "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}

    expected = pycocotools_stats(ground_truth, best_per_image(results), tmp_path)
    scores_ = metrics.scores()
    actual = {"map": scores_.mean_ap, "ap50": scores_.ap50, "ap75": scores_.ap75, "ap_small": scores_.ap_small,
              "ap_medium": scores_.ap_medium, "ap_large": scores_.ap_large, "ar100": scores_.ar100}
    assert all(v is not None for v in expected.values())
    assert actual == pytest.approx(expected, abs=1e-12)
    # the per-image limit matters here: all 150 scored would give other numbers
    assert pycocotools_stats(ground_truth, results, tmp_path) != pytest.approx(expected, abs=1e-6)


def test_merged_accumulators_equal_one_accumulator_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    whole_seg, parts_seg = SegmentationMetrics(3, 255), [SegmentationMetrics(3, 255) for _ in range(3)]
    whole_det, parts_det = DetectionMetrics(), [DetectionMetrics() for _ in range(3)]
    whole_lat, parts_lat = LatencyStats(), [LatencyStats() for _ in range(3)]
    names = ["a", "b", "c", "d"]
    for frame in range(12):
        part = frame // 4
        truth = rng.integers(0, 3, (6, 7))
        truth[0] = 255
        prediction = rng.integers(0, 3, (6, 7))
        corners = rng.uniform(0, 50, (3, 2))
        boxes = np.hstack([corners, corners + rng.uniform(5, 30, (3, 2))])
        classes = list(rng.choice(names[part:], 3))  # later parts bring classes the earlier ones lacked
        det = boxes + rng.normal(0, 2, boxes.shape)
        det_classes = list(rng.choice(names, 3))
        scores = rng.random(3)
        timings = {"inference": float(rng.uniform(1, 9)), "total": float(rng.uniform(9, 20))}
        for seg, det_metrics, latency in ((whole_seg, whole_det, whole_lat),
                                          (parts_seg[part], parts_det[part], parts_lat[part])):
            seg.add_frame(truth, prediction)
            det_metrics.add_frame(boxes, classes, det, scores, det_classes)
            latency.add(timings)
    for seg, det_metrics, latency in zip(parts_seg[1:], parts_det[1:], parts_lat[1:], strict=True):
        parts_seg[0].merge(seg)
        parts_det[0].merge(det_metrics)
        parts_lat[0].merge(latency)

    np.testing.assert_array_equal(parts_seg[0].confusion, whole_seg.confusion)
    assert parts_seg[0].scores().mean_iou == whole_seg.scores().mean_iou
    assert parts_det[0].scores() == whole_det.scores()  # every number, exactly
    assert parts_lat[0].summary() == whole_lat.summary()
    with pytest.raises(ValueError, match="cannot merge"):
        whole_seg.merge(SegmentationMetrics(4, 255))


def test_box_iou_and_frame_errors() -> None:
    np.testing.assert_allclose(box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]), [[1 / 3, 0]])
    errors = frame_detection_errors(
        [[0, 0, 10, 10], [50, 50, 60, 60]], ["a", "a"],
        [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8, 0.7], ["a", "a", "b"],
    )
    assert errors == 3  # duplicate FP, wrong-class FP, one miss


# ----------------------------------------------------------------------------- latency


def test_latency_percentiles() -> None:
    stats = LatencyStats()
    for value in range(1, 101):
        stats.add({"inference": float(value), "preprocess": 1.0})
    summary = stats.summary()
    assert stats.stages == ["inference", "preprocess"]
    assert summary["inference"]["p50"] == pytest.approx(50.5)
    assert summary["inference"]["p99"] == pytest.approx(99.01)
    assert summary["preprocess"] == {"p50": 1.0, "p90": 1.0, "p99": 1.0, "mean": 1.0, "count": 100}
