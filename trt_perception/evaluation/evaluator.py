"""Scores a stream of per-frame predictions against ground truth, counting every frame it cannot use.

Shared by the offline replay (``bag_eval``) and the live mode (``live``): they produce
``FramePrediction`` objects; this module pairs them with ground truth (by frame order or header
stamp), feeds the metrics, remembers the worst frames and counts skips per reason.
``merge_results`` joins the results of consecutive parts (bags of a fleet) into the result one
evaluator fed all their frames in that order would give.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from trt_perception.evaluation.ground_truth import BoxTruth, GroundTruthError, MaskTruth, StampMatcher, Truth
from trt_perception.evaluation.metrics import (
    DetectionMetrics,
    DetectionScores,
    LatencyStats,
    SegmentationMetrics,
    SegmentationScores,
    frame_detection_errors,
)
from trt_perception.results import Detections


@dataclass
class FramePrediction:
    """One processed frame: where it was, a small RGB picture of it, and the model's output."""

    index: int
    stamp: int
    source_size: tuple[int, int]
    thumbnail: npt.NDArray[np.uint8] | None
    labels: npt.NDArray[np.unsignedinteger] | None = None
    detections: Detections | None = None  # everything the COCO protocol scores (low threshold)
    class_names: list[str] = field(default_factory=list)
    deployed: Detections | None = None  # offline: what the node publishes (the spec's threshold)
    deployed_names: list[str] = field(default_factory=list)

    def shown_detections(self) -> tuple[Detections, list[str]]:
        """The detections a user sees (deployed ones where known) with their class names."""
        assert self.detections is not None
        if self.deployed is not None:
            return self.deployed, self.deployed_names
        return self.detections, self.class_names


class OrderedTruth(Protocol):
    """Ground truth given per frame position (a mask folder, a COCO file)."""

    description: str

    def __len__(self) -> int: ...

    def for_frame(self, index: int) -> Truth | None: ...


@dataclass
class WorstFrame:
    """A frame kept for the report: how bad, its prediction and its ground truth."""

    badness: float
    score_text: str
    prediction: FramePrediction
    truth: Truth


@dataclass
class Accumulators:
    """The metric state behind a result, kept so results of several parts can be merged exactly."""

    segmentation: SegmentationMetrics | None
    detection: DetectionMetrics | None
    deployment: DetectionMetrics | None  # detections at the deployment threshold (offline only)

    def merge(self, other: Accumulators) -> None:
        """Append the frames behind ``other`` (evaluated with the same settings)."""
        for mine, theirs in ((self.segmentation, other.segmentation), (self.detection, other.detection),
                             (self.deployment, other.deployment)):
            if (mine is None) != (theirs is None):
                raise ValueError("cannot merge results of differently configured evaluations")
            if mine is not None:
                mine.merge(theirs)  # type: ignore[arg-type]


@dataclass
class EvaluationResult:
    """Everything the report shows."""

    model: str
    task: str
    class_names: list[str]
    palette: tuple[tuple[int, int, int], ...] | None
    frames_on_topic: int
    frames_processed: int
    frames_evaluated: int
    skipped: dict[str, int]
    frames_without_truth: int
    truths_without_frame: int
    truth_unusable: dict[str, int]
    outputs_without_frame: int
    read_error: str | None
    ground_truth: str | None
    segmentation: SegmentationScores | None
    detection: DetectionScores | None
    ignore_index: int | None
    latency: LatencyStats
    wall_seconds: float
    worst_frames: list[WorstFrame]
    device: str | None = None  # where pre/post-processing ran (offline: cpu | gpu; live: the node's business)
    deployment: DetectionScores | None = None  # COCO metrics of the detections at the deployment threshold
    deployment_threshold: float | None = None
    accumulators: Accumulators | None = None

    @property
    def fps(self) -> float:
        """Processed frames per second of wall-clock time (reading, inference, writing)."""
        return self.frames_processed / self.wall_seconds if self.wall_seconds > 0 else math.nan


class Evaluator:
    """Accumulates metrics over frames in constant memory (bounded queues, a few worst frames)."""

    def __init__(
        self,
        model: str,
        task: str,
        class_names: list[str],
        *,
        palette: tuple[tuple[int, int, int], ...] | None = None,
        ordered_truth: OrderedTruth | None = None,
        truth_topic: str | None = None,
        ignore_index: int | None = None,
        deployment_threshold: float | None = None,
        worst_frames: int = 4,
    ) -> None:
        if ordered_truth is not None and truth_topic is not None:
            raise ValueError("ground truth comes either from files or from a topic, not both")
        self.model = model
        self.task = task
        self.palette = palette
        self.class_names = list(class_names)
        self.ordered_truth = ordered_truth
        self.truth_topic = truth_topic
        self.ignore_index = ignore_index
        self.latency = LatencyStats()
        self.segmentation = SegmentationMetrics(max(1, len(class_names)), ignore_index) if task == "segmentation" else None
        self.detection = DetectionMetrics() if task == "detection" else None
        self.deployment_threshold = deployment_threshold if task == "detection" else None
        self.deployment = DetectionMetrics() if self.deployment_threshold is not None else None
        self.matcher: StampMatcher[FramePrediction] = StampMatcher(max_pending=32)
        self.skipped: Counter[str] = Counter()
        self.truth_unusable: Counter[str] = Counter()
        self.frames_on_topic = 0
        self.frames_processed = 0
        self.frames_evaluated = 0
        self.outputs_without_frame = 0  # live mode: node outputs whose stamp matches no played frame
        self.read_error: str | None = None  # why reading stopped before the end of the bag
        self._frames_without_truth = 0
        self._worst: list[tuple[float, int, WorstFrame]] = []
        self._worst_count = worst_frames

    @property
    def has_truth(self) -> bool:
        """Whether any ground truth was given."""
        return self.ordered_truth is not None or self.truth_topic is not None

    def skip(self, index: int, reason: str) -> None:
        """Count a frame that could not be processed."""
        self.frames_on_topic = max(self.frames_on_topic, index + 1)
        self.skipped[reason] += 1

    def add_prediction(self, frame: FramePrediction, milliseconds: dict[str, float]) -> None:
        """A processed frame with its stage timings; scored now or when its ground truth arrives."""
        self.frames_on_topic = max(self.frames_on_topic, frame.index + 1)
        self.frames_processed += 1
        self.latency.add(milliseconds)
        if self.ordered_truth is not None:
            try:
                truth = self.ordered_truth.for_frame(frame.index)
            except GroundTruthError as error:  # one unreadable mask file: counted, the others still score
                self.truth_unusable[str(error)] += 1
                return
            if truth is None:
                self._frames_without_truth += 1
            else:
                self._score(frame, truth)
        elif self.truth_topic is not None and (pair := self.matcher.add_frame(frame.stamp, frame)):
            self._score(*pair)

    def add_truth(self, stamp: int, truth: Truth, count_unmatched: bool = True) -> None:
        """A ground-truth message from the topic, matched to a frame by header stamp (``count_unmatched``
        False: not counted when no frame has its stamp; another time slice counts it)."""
        if pair := self.matcher.add_truth(stamp, truth, count_unmatched):
            self._score(*pair)

    def truth_not_usable(self, reason: str) -> None:
        """Count a ground-truth message that could not be read."""
        self.truth_unusable[reason] += 1

    def _score(self, frame: FramePrediction, truth: Truth) -> None:
        try:
            if self.segmentation is not None:
                badness, text = self._score_segmentation(frame, truth)
            else:
                badness, text = self._score_detection(frame, truth)
        except ValueError as error:
            self.truth_unusable[str(error)] += 1
            return
        self.frames_evaluated += 1
        if math.isnan(badness) or self._worst_count <= 0:
            return
        entry = (badness, -frame.index, WorstFrame(badness, text, frame, truth))
        if len(self._worst) < self._worst_count:
            heapq.heappush(self._worst, entry)
        elif entry[:2] > self._worst[0][:2]:
            heapq.heapreplace(self._worst, entry)

    def _score_segmentation(self, frame: FramePrediction, truth: Truth) -> tuple[float, str]:
        assert self.segmentation is not None and frame.labels is not None
        if not isinstance(truth, MaskTruth):
            raise ValueError("ground truth of a segmentation model must be label masks, got boxes")
        if truth.labels.shape != frame.labels.shape:
            raise ValueError(
                f"ground-truth mask size {truth.labels.shape[1]}x{truth.labels.shape[0]} differs from "
                f"the image size {frame.labels.shape[1]}x{frame.labels.shape[0]}"
            )
        scores = self.segmentation.add_frame(truth.labels, frame.labels)
        return 1.0 - scores.mean_iou, f"mIoU {scores.mean_iou:.3f}"

    def _score_detection(self, frame: FramePrediction, truth: Truth) -> tuple[float, str]:
        assert self.detection is not None and frame.detections is not None
        if not isinstance(truth, BoxTruth):
            raise ValueError("ground truth of a detection model must be boxes, got label masks")
        dets = frame.detections
        self.detection.add_frame(truth.boxes, truth.classes, dets.boxes, dets.scores, frame.class_names, truth.crowd,
                                 truth.areas)
        shown, names = frame.shown_detections()
        if self.deployment is not None and frame.deployed is not None:
            self.deployment.add_frame(truth.boxes, truth.classes, shown.boxes, shown.scores, names, truth.crowd,
                                      truth.areas)
        errors = frame_detection_errors(truth.boxes, truth.classes, shown.boxes, shown.scores, names)
        return float(errors), f"{errors} errors (misses + false positives at IoU 0.5)"

    def finish(self, wall_seconds: float) -> EvaluationResult:
        """Close the matching and summarize; ``wall_seconds`` is how long the run took."""
        self.matcher.finish()
        truths_without_frame = self.matcher.truths_without_frame
        if self.ordered_truth is not None:
            truths_without_frame = max(0, len(self.ordered_truth) - self.frames_on_topic)
        description = self.ordered_truth.description if self.ordered_truth is not None else (
            f"topic {self.truth_topic}, matched to frames by header stamp" if self.truth_topic else None
        )
        return EvaluationResult(
            model=self.model,
            task=self.task,
            class_names=self.class_names,
            palette=self.palette,
            frames_on_topic=self.frames_on_topic,
            frames_processed=self.frames_processed,
            frames_evaluated=self.frames_evaluated,
            skipped=dict(self.skipped),
            frames_without_truth=self._frames_without_truth + self.matcher.frames_without_truth,
            truths_without_frame=truths_without_frame,
            truth_unusable=dict(self.truth_unusable),
            outputs_without_frame=self.outputs_without_frame,
            read_error=self.read_error,
            ground_truth=description,
            segmentation=self.segmentation.scores() if self.segmentation and self.frames_evaluated else None,
            detection=self.detection.scores() if self.detection and self.frames_evaluated else None,
            ignore_index=self.ignore_index,
            latency=self.latency,
            wall_seconds=wall_seconds,
            worst_frames=[entry[2] for entry in sorted(self._worst, key=lambda e: e[:2], reverse=True)],
            deployment=self.deployment.scores() if self.deployment and self.frames_evaluated else None,
            deployment_threshold=self.deployment_threshold,
            accumulators=Accumulators(self.segmentation, self.detection, self.deployment),
        )


def merge_results(
    parts: Sequence[tuple[str, EvaluationResult]], wall_seconds: float, worst_frames: int = 4
) -> EvaluationResult:
    """The result of consecutive named parts, as one evaluator fed their frames in this order gives.

    Counts add; metrics come from the merged accumulators (summed confusion matrix, COCO over all
    detections and ground truth at once, percentiles over every frame's latency); the worst frames
    are the worst of all parts, their text prefixed with the part's name.
    """
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0][1]
    merged = copy.deepcopy(first.accumulators)
    latency = LatencyStats()
    if merged is None:
        raise ValueError("results without accumulators (live mode) cannot be merged")
    for index, (name, part) in enumerate(parts):
        if part.accumulators is None or (part.model, part.task) != (first.model, first.task):
            raise ValueError(f"part {name} was not evaluated like the first one ({first.model}, {first.task})")
        if index:
            merged.merge(part.accumulators)
        latency.merge(part.latency)
    worst = sorted(
        (dataclasses.replace(w, score_text=f"{name}: {w.score_text}") for name, part in parts for w in part.worst_frames),
        key=lambda w: w.badness, reverse=True,
    )[:worst_frames]
    evaluated = sum(part.frames_evaluated for _, part in parts)
    read_errors = [f"{name}: {part.read_error}" for name, part in parts if part.read_error]
    return dataclasses.replace(
        first,
        frames_on_topic=sum(part.frames_on_topic for _, part in parts),
        frames_processed=sum(part.frames_processed for _, part in parts),
        frames_evaluated=evaluated,
        skipped=dict(sum((Counter(part.skipped) for _, part in parts), Counter())),
        frames_without_truth=sum(part.frames_without_truth for _, part in parts),
        truths_without_frame=sum(part.truths_without_frame for _, part in parts),
        truth_unusable=dict(sum((Counter(part.truth_unusable) for _, part in parts), Counter())),
        outputs_without_frame=sum(part.outputs_without_frame for _, part in parts),
        read_error="; ".join(read_errors) or None,
        segmentation=merged.segmentation.scores() if merged.segmentation and evaluated else None,
        detection=merged.detection.scores() if merged.detection and evaluated else None,
        deployment=merged.deployment.scores() if merged.deployment and evaluated else None,
        latency=latency,
        wall_seconds=wall_seconds,
        worst_frames=worst,
        accumulators=merged,
    )
