"""Result types handed from the decoders to the outputs (messages, files, metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from trt_perception.geometry import ResizeGeometry


@dataclass
class Detections:
    """Axis-aligned boxes ``xyxy`` (float32, pixels), scores (float32) and class indices (int64).

    ``inverted_left_out``: how many boxes with negative width or height (a decoding error, never a
    detection) ``filter_detections`` left out before making these.
    """

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    class_ids: npt.NDArray[np.int64]
    inverted_left_out: int = 0

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.class_ids):
            raise ValueError(
                f"Detections: {len(self.boxes)} boxes, {len(self.scores)} scores and "
                f"{len(self.class_ids)} class ids differ in length"
            )

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, index: npt.NDArray[np.bool_] | npt.NDArray[np.integer]) -> Detections:
        """The detections picked by a boolean mask or an index array, in that order."""
        return Detections(self.boxes[index], self.scores[index], self.class_ids[index])


@dataclass
class StageTimings:
    """Milliseconds spent per pipeline stage for one frame, in execution order."""

    milliseconds: dict[str, float] = field(default_factory=dict)

    def total(self) -> float:
        """Sum of all stages in milliseconds."""
        return sum(self.milliseconds.values())


def class_name(class_names: tuple[str, ...], class_id: int) -> str:
    """The name of a class index, or the index as text when the spec has no name for it."""
    return class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)


@dataclass
class SegmentationResult:
    """Class index per pixel for one image, at source size (or network size when the spec asks)."""

    labels: npt.NDArray[np.unsignedinteger]
    class_names: tuple[str, ...]
    geometry: ResizeGeometry
    timings: StageTimings


@dataclass
class DetectionResult:
    """Detections of one image in source pixels (``xyxy``), best score first."""

    detections: Detections
    class_names: tuple[str, ...]
    geometry: ResizeGeometry
    timings: StageTimings

    def names(self) -> list[str]:
        """The class name of each detection."""
        return [class_name(self.class_names, int(class_id)) for class_id in self.detections.class_ids]
