"""NMS and the detection filter against a plain Python greedy NMS written here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trt_perception.decoders import DetectionFilter, filter_detections, nms
from trt_perception.decoders.nms import _opencv_nms
from trt_perception.errors import SpecError
from trt_perception.results import Detections


def reference_iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def reference_nms(
    boxes: list[list[float]], scores: list[float], threshold: float, classes: list[int] | None
) -> list[int]:
    """Textbook greedy NMS: best score first (ties: lower index), drop what overlaps a kept box."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for candidate in order:
        if all(
            (classes is not None and classes[k] != classes[candidate])
            or reference_iou(boxes[k], boxes[candidate]) <= threshold
            for k in kept
        ):
            kept.append(candidate)
    return kept


# Integer coordinates keep every IoU exact, so both implementations see the same ties.
coordinate = st.integers(-20, 60).map(float)
box = st.tuples(coordinate, coordinate, st.integers(0, 40), st.integers(0, 40)).map(
    lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]
)
detections_strategy = st.lists(
    st.tuples(box, st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), st.integers(0, 3)), max_size=40
)
thresholds = st.sampled_from([0.0, 0.2, 1 / 3, 0.5, 0.7, 1.0])


@settings(max_examples=150, deadline=None)
@given(detections_strategy, thresholds, st.booleans())
def test_nms_matches_reference(rows, threshold, per_class) -> None:
    boxes = [row[0] for row in rows]
    scores = [row[1] for row in rows]
    classes = [row[2] for row in rows] if per_class else None
    kept = nms(
        np.array(boxes).reshape(-1, 4),
        np.array(scores),
        threshold,
        None if classes is None else np.array(classes),
    )
    assert kept.dtype == np.int64
    assert kept.tolist() == reference_nms(boxes, scores, threshold, classes)


@settings(max_examples=60, deadline=None)
@given(detections_strategy, st.integers(1, 5))
def test_nms_max_output_equals_truncation(rows, limit) -> None:
    boxes = np.array([row[0] for row in rows]).reshape(-1, 4)
    scores = np.array([row[1] for row in rows])
    classes = np.array([row[2] for row in rows])
    assert (
        nms(boxes, scores, 0.5, classes, limit).tolist() == nms(boxes, scores, 0.5, classes)[:limit].tolist()
    )


@settings(max_examples=150, deadline=None)
@given(detections_strategy, thresholds, st.booleans())
def test_nms_with_float32_scores_matches_reference(rows, threshold, per_class) -> None:
    """float32 scores (as decoders give) take OpenCV's NMS where it provably agrees; exact IoU ties
    at the threshold (integer boxes), empty boxes (OpenCV lets two of any classes suppress each
    other) and negative coordinates (its class offsets assume >= 0) must give the same result."""
    boxes = [row[0] for row in rows]
    scores = [row[1] for row in rows]
    classes = [row[2] for row in rows] if per_class else None
    kept = nms(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(scores, np.float32),
        threshold,
        None if classes is None else np.array(classes),
    )
    expected = reference_nms(boxes, [float(np.float32(score)) for score in scores], threshold, classes)
    assert kept.tolist() == expected


@pytest.mark.parametrize("per_class", [True, False])
def test_opencv_nms_is_used_for_typical_detections_and_equals_reference(per_class: bool) -> None:
    rng = np.random.default_rng(7)
    corner = rng.uniform(-200, 1800, (600, 2))  # negative coordinates too: classes must stay apart
    boxes = np.hstack([corner, corner + rng.uniform(10, 300, (600, 2))]).astype(np.float32)
    scores = rng.uniform(0.3, 1, 600).astype(np.float32)
    classes = rng.integers(0, 80, 600) if per_class else None
    assert _opencv_nms(boxes.astype(np.float64), scores, 0.45, classes) is not None
    expected = reference_nms(boxes.tolist(), scores.tolist(), 0.45, None if classes is None else classes.tolist())
    assert nms(boxes, scores, 0.45, classes, 100).tolist() == expected[:100]


def recorded_top_k(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``top_k`` of every OpenCV NMS call from now on."""
    calls: list[int] = []
    for name in ("NMSBoxes", "NMSBoxesBatched"):
        original = getattr(cv2.dnn, name)

        def spy(*args, original=original, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(kwargs.get("top_k", 0))
            return original(*args, **kwargs)

        monkeypatch.setattr(cv2.dnn, name, spy)
    return calls


@pytest.mark.parametrize("per_class", [True, False])
def test_nms_with_a_limit_runs_opencv_over_the_best_boxes_when_they_keep_enough(
    per_class: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(8)
    corner = rng.uniform(0, 1800, (600, 2))
    boxes = np.hstack([corner, corner + rng.uniform(10, 300, (600, 2))]).astype(np.float32)
    scores = rng.uniform(0.3, 1, 600).astype(np.float32)
    classes = rng.integers(0, 80, 600) if per_class else None
    calls = recorded_top_k(monkeypatch)
    kept = nms(boxes, scores, 0.45, classes, 50)
    expected = reference_nms(boxes.tolist(), scores.tolist(), 0.45, None if classes is None else classes.tolist())
    assert kept.tolist() == expected[:50]
    assert calls == [100, 100]  # the 100 best boxes kept 50 or more: no run over all 600


def test_nms_with_a_limit_runs_opencv_over_every_box_when_the_best_keep_too_few(monkeypatch: pytest.MonkeyPatch) -> None:
    # 300 boxes heaped on four spots, all scored above 150 scattered ones: the best 100 keep 4 boxes
    rng = np.random.default_rng(9)
    spots = rng.uniform(0, 1500, (4, 2))[rng.integers(0, 4, 300)] + rng.uniform(0, 3, (300, 2))
    scattered = rng.uniform(0, 1800, (150, 2))
    corner = np.vstack([spots, scattered])
    boxes = np.hstack([corner, corner + 100]).astype(np.float32)
    scores = np.concatenate([rng.uniform(0.6, 1, 300), rng.uniform(0.3, 0.5, 150)]).astype(np.float32)
    calls = recorded_top_k(monkeypatch)
    kept = nms(boxes, scores, 0.45, None, 50)
    expected = reference_nms(boxes.tolist(), scores.tolist(), 0.45, None)
    assert len(expected) > 50 and kept.tolist() == expected[:50]
    assert calls == [100, 100, 0, 0]


def test_nms_with_a_limit_matches_reference_on_clustered_boxes(monkeypatch: pytest.MonkeyPatch) -> None:
    """150 random scenes of clustered float32 boxes (as detector heads give), limits 1-40: the kept
    boxes are the plain loop's first ``limit`` both where OpenCV's run over the ``2 * limit`` best
    boxes kept enough and where the full run had to follow (each happens here)."""
    rng = np.random.default_rng(10)
    calls = recorded_top_k(monkeypatch)
    paths = set()
    for _ in range(150):
        count, limit = int(rng.integers(20, 150)), int(rng.integers(1, 40))
        spots = rng.uniform(0, 600, (int(rng.integers(1, 30)), 2))
        centres = spots[rng.integers(0, len(spots), count)] + rng.normal(0, rng.choice([2.0, 20.0]), (count, 2))
        sizes = rng.uniform(10, 80, (count, 2))
        boxes = np.hstack([centres - sizes / 2, centres + sizes / 2]).astype(np.float32)
        scores = rng.uniform(0.3, 1, count).astype(np.float32)
        classes = rng.integers(0, 3, count) if rng.random() < 0.5 else None
        calls.clear()
        kept = nms(boxes, scores, 0.45, classes, limit)
        expected = reference_nms(boxes.tolist(), scores.tolist(), 0.45, None if classes is None else classes.tolist())
        assert kept.tolist() == expected[:limit]
        paths.add("best boxes" if calls == [2 * limit] * 2 else "then all" if calls == [2 * limit] * 2 + [0, 0] else "other")
    assert {"best boxes", "then all"} <= paths


def test_nms_with_a_limit_runs_over_every_box_when_the_best_keep_one_too_few(monkeypatch: pytest.MonkeyPatch) -> None:
    # limit 3: the 6 best boxes are three copies each of two boxes (2 kept); the seventh is apart
    first, second, apart = [0, 0, 100, 100], [500, 0, 600, 100], [0, 500, 100, 600]
    boxes = np.array([first, second] * 3 + [apart], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], np.float32)
    calls = recorded_top_k(monkeypatch)
    assert nms(boxes, scores, 0.45, None, 3).tolist() == [0, 1, 6]
    assert calls == [6, 6, 0, 0]


def test_nms_threshold_is_exclusive() -> None:
    """The two boxes overlap with IoU exactly 0.5 (intersection 100, union 200)."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 20]], np.float32)
    scores = np.array([0.6, 0.9], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 0]
    assert nms(boxes, scores, 0.49).tolist() == [1]
    assert nms(boxes, scores, 0.49, class_ids=np.array([0, 1])).tolist() == [1, 0]


def as_detections(rows) -> Detections:
    return Detections(
        np.array([row[0] for row in rows]).reshape(-1, 4), [row[1] for row in rows], [row[2] for row in rows]
    )


@settings(max_examples=80, deadline=None)
@given(
    detections_strategy,
    st.sampled_from([0.0, 0.3, 0.6]),
    st.one_of(st.none(), thresholds),
    st.booleans(),
    st.integers(1, 10),
    st.one_of(st.none(), st.sets(st.integers(0, 3), max_size=3)),
)
def test_filter_detections_matches_reference(
    rows, score_threshold, nms_iou, agnostic, max_detections, allowed
) -> None:
    candidates = [
        i
        for i, row in enumerate(rows)
        if row[1] >= score_threshold and (allowed is None or row[2] in allowed)
    ]
    boxes = [rows[i][0] for i in candidates]
    scores = [rows[i][1] for i in candidates]
    classes = [rows[i][2] for i in candidates]
    if nms_iou is None:
        order = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))
    else:
        order = reference_nms(boxes, scores, nms_iou, None if agnostic else classes)
    expected = [candidates[i] for i in order[:max_detections]]

    detection_filter = DetectionFilter(score_threshold, nms_iou, agnostic, max_detections, allowed)
    result = filter_detections(as_detections(rows), detection_filter)
    expected_detections = as_detections(rows).select(np.array(expected, dtype=np.int64))
    np.testing.assert_array_equal(result.boxes, expected_detections.boxes)
    np.testing.assert_array_equal(result.scores, expected_detections.scores)
    np.testing.assert_array_equal(result.class_ids, expected_detections.class_ids)


def test_filter_on_empty_detections() -> None:
    assert len(filter_detections(Detections.empty(), DetectionFilter())) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score_threshold": float("nan")}, "detection.score_threshold"),
        ({"nms_iou": 1.5}, "detection.nms_iou"),
        ({"score_threshold": 10**400}, "detection.score_threshold"),  # was a TypeError from np.isfinite
        ({"class_agnostic": "yes"}, "detection.class_agnostic"),
        ({"max_detections": 0}, "detection.max_detections"),
        ({"allowed_class_ids": [1, -2]}, "detection.classes"),
        ({"allowed_class_ids": ["person"]}, "detection.classes"),
    ],
)
def test_detection_filter_rejects_bad_values(kwargs, message) -> None:
    with pytest.raises(SpecError, match=message):
        DetectionFilter(**kwargs)
