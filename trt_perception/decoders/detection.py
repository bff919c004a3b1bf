"""Detection decoders: model outputs to ``Detections`` (``xyxy`` in network-input pixels).

Each decoder keeps the detections whose score reaches ``score_threshold``; NMS, the detection limit
and the class allow-list are applied afterwards by ``filter_detections``. Decoders with
``device_exact`` set also run on CuPy outputs (``decode_arrays`` then returns CuPy arrays) with
results identical to the host's: they only select, compare and do single IEEE operations.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from trt_perception.decoders.boxes import BOX_FORMATS, to_xyxy
from trt_perception.decoders.params import DecoderParams
from trt_perception.decoders.scores import activate, require_probabilities, score_activation, sigmoid, softmax
from trt_perception.decoders.tensors import (
    Shape,
    declared_output,
    dims_agree,
    finite_range,
    require_finite,
    require_rank,
    select_output,
    shape_mismatch,
)
from trt_perception.errors import InferenceError, SpecError
from trt_perception.geometry import ResizeGeometry
from trt_perception.gpu._cupy import array_module
from trt_perception.results import Detections

Cached = TypeVar("Cached")
# Most a float class index may differ from a whole number (exports store exact integers in floats): more
# means the tensor or column read as classes holds something else, e.g. scores.
CLASS_INDEX_TOLERANCE = 1e-3


class SizeCache(Generic[Cached]):
    """Values made per network input size, the ``capacity`` most recently used kept: a dynamic-size
    model sees many sizes, and a cache keyed by every size ever seen would grow without bound."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._values: OrderedDict[tuple[int, int], Cached] = OrderedDict()
        self._lock = threading.Lock()  # decoders may run in several worker threads

    def __len__(self) -> int:
        return len(self._values)

    def get(self, size: tuple[int, int], make: Callable[[tuple[int, int]], Cached]) -> Cached:
        """The value for ``size``, made by ``make(size)`` when not cached (the least recently used
        value is dropped when the cache is full)."""
        with self._lock:
            value = self._values.get(size)
            if value is not None:
                self._values.move_to_end(size)
                return value
        value = make(size)
        with self._lock:
            self._values[size] = value
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)
        return value


@dataclass
class DetectionDecoder(ABC):
    """Turns the outputs of a detection model into detections in network-input pixels.

    ``class_offset`` is subtracted from the model's class indices so that they index the labels
    (e.g. 1 for TF Object Detection API exports whose label maps start at 1).
    ``nms_on_unclipped_boxes``: the family's own pipeline runs NMS on the boxes as predicted and clips
    the kept ones to the image afterwards (Ultralytics, Darknet / OpenCV, YOLOX); otherwise boxes are
    clipped first, as TF Object Detection API's post-processing does (clipping changes the overlap
    of boxes that cross the image edge, so NMS may keep others).
    """

    class_offset: int
    num_classes: int | None
    device_exact: ClassVar[bool] = True
    nms_on_unclipped_boxes: ClassVar[bool] = False

    def decode(
        self, outputs: Mapping[str, npt.NDArray], geometry: ResizeGeometry, score_threshold: float
    ) -> Detections:
        """Detections with score >= ``score_threshold``, boxes ``xyxy`` in network-input pixels."""
        return Detections(*self.decode_arrays(outputs, geometry, score_threshold))

    @abstractmethod
    def decode_arrays(
        self, outputs: Mapping[str, Any], geometry: ResizeGeometry, score_threshold: float
    ) -> tuple[Any, Any, Any]:
        """``decode``'s boxes ``Nx4``, scores ``N`` and int64 class ids ``N`` as arrays of the outputs'
        array module (numpy, or CuPy for device outputs when ``device_exact``)."""

    def check_outputs(self, shapes: Mapping[str, Shape], network_size: tuple[int, int] | None) -> None:
        """Raise ``SpecError`` before the first frame when a tensor this decoder reads is missing from the
        model's outputs (``shapes``: declared shapes, None for dynamic dimensions) or cannot have the shape
        it needs; ``network_size`` is the input (height, width), None when dynamic."""
        for param, name in self.named_outputs().items():
            declared_output(shapes, name, param)

    def named_outputs(self) -> dict[str, str | None]:
        """The decoder parameter and tensor name (None: the model's only output) of each tensor it reads."""
        return {}

    def _class_ids(self, name: str, values: Any) -> Any:
        """Class indices from ``values`` (integer, or float holding whole numbers) minus the offset, checked
        against the labels."""
        xp = array_module(values)
        raw = values if np.issubdtype(values.dtype, np.integer) else xp.rint(values)
        if raw is not values and values.size and float(xp.abs(values - raw).max()) > CLASS_INDEX_TOLERANCE:
            raise InferenceError(
                f"output '{name}' gives class indices that are not whole numbers (e.g. "
                f"{float(values[int(xp.argmax(xp.abs(values - raw)))]):.4g}): it is not the class index "
                "the spec says (check decoder.columns or decoder.classes)"
            )
        if not raw.size:
            return raw.astype(np.int64)
        low, high = raw.min().item(), raw.max().item()  # read once: the bounds and the labels check below
        if max(abs(low), abs(high)) >= 2.0**62:
            raise InferenceError(
                f"output '{name}' gives class indices {float(low):.4g}..{float(high):.4g}, beyond any class "
                "index (check decoder.columns or decoder.classes)"
            )
        ids = raw.astype(np.int64) - self.class_offset
        low, high = int(low) - self.class_offset, int(high) - self.class_offset
        highest = None if self.num_classes is None else self.num_classes - 1
        if low < 0 or (highest is not None and high > highest):
            allowed = "non-negative" if highest is None else f"within 0..{highest} (one per label)"
            raise InferenceError(
                f"output '{name}' gives class indices {low}..{high} after decoder.class_offset "
                f"{self.class_offset}; they must be {allowed}"
            )
        return ids


def class_offset_param(params: DecoderParams) -> int:
    """``decoder.class_offset`` (default 0), subtracted from the model's class indices."""
    return params.integer("class_offset", 0)


def _batch_item(name: str, array: npt.NDArray, item_rank: int, expected: str) -> npt.NDArray:
    """Batch item 0 of a ``[B, ...]`` tensor, or the tensor itself when it has no batch dimension."""
    require_rank(name, array, (item_rank, item_rank + 1), expected)
    return array[0] if array.ndim == item_rank + 1 else array


@dataclass
class SeparateTensorsDecoder(DetectionDecoder):
    """Boxes, scores and classes in separate tensors, optionally with a valid-detection count.

    Used for TensorRT EfficientNMS / TF2 Object Detection API exports (``efficient_nms``) and
    torchvision-style exports with a dynamic number of detections (``boxes_scores_classes``).
    """

    boxes: str
    scores: str
    classes: str | None
    num_detections: str | None
    box_format: str
    normalized: bool
    activation: str

    @property
    def device_exact(self) -> bool:  # type: ignore[override]
        """Exact on the device only without an activation (a device ``exp`` may round differently)."""
        return self.activation == "none"

    @classmethod
    def efficient_nms_from_params(
        cls, params: DecoderParams, num_classes: int | None
    ) -> SeparateTensorsDecoder:
        """EfficientNMS / TF OD API tensor names by default; all four are configurable."""
        return cls._from_params(
            params, num_classes, "detection_boxes", "detection_scores", "detection_classes", "num_detections"
        )

    @classmethod
    def boxes_scores_classes_from_params(
        cls, params: DecoderParams, num_classes: int | None
    ) -> SeparateTensorsDecoder:
        """torchvision tensor names (boxes, scores, labels) by default, no detection count."""
        return cls._from_params(params, num_classes, "boxes", "scores", "labels", None)

    @classmethod
    def _from_params(
        cls,
        params: DecoderParams,
        num_classes: int | None,
        boxes: str,
        scores: str,
        classes: str,
        num_detections: str | None,
    ) -> SeparateTensorsDecoder:
        return cls(
            boxes=params.string("boxes", boxes),
            scores=params.string("scores", scores),
            classes=params.optional_string("classes", classes),
            num_detections=params.optional_string("num_detections", num_detections),
            box_format=params.string("box_format", "xyxy", tuple(BOX_FORMATS)),
            normalized=params.boolean("normalized", False),
            activation=score_activation(params, choices=("none", "sigmoid")),
            class_offset=class_offset_param(params),
            num_classes=num_classes,
        )

    def named_outputs(self) -> dict[str, str | None]:
        named: dict[str, str | None] = {"decoder.boxes": self.boxes, "decoder.scores": self.scores}
        if self.classes is not None:
            named["decoder.classes"] = self.classes
        if self.num_detections is not None:
            named["decoder.num_detections"] = self.num_detections
        return named

    def check_outputs(self, shapes: Mapping[str, Shape], network_size: tuple[int, int] | None) -> None:
        super().check_outputs(shapes, network_size)
        name, shape = declared_output(shapes, self.boxes, "decoder.boxes")
        if len(shape) not in (2, 3) or shape[-1] not in (None, 4):
            raise shape_mismatch("decoder.boxes", name, shape, "[B,N,4] or [N,4] boxes", shapes)
        if self.num_detections is not None:
            name, shape = declared_output(shapes, self.num_detections, "decoder.num_detections")
            if len(shape) > 2 or not all(dims_agree(dim, 1) for dim in shape[1:]):
                raise shape_mismatch("decoder.num_detections", name, shape, "one count per image: [B] or [B,1]", shapes)

    def decode_arrays(
        self, outputs: Mapping[str, Any], geometry: ResizeGeometry, score_threshold: float
    ) -> tuple[Any, Any, Any]:
        boxes_name, boxes_tensor = select_output(outputs, self.boxes, "decoder.boxes")
        boxes = _batch_item(boxes_name, boxes_tensor, 2, "[N,4] or [B,N,4]")
        if boxes.shape[1] != 4:
            raise InferenceError(
                f"output '{boxes_name}' has shape {list(boxes_tensor.shape)}; expected [B,N,4]"
            )
        count = self._valid_count(outputs, len(boxes))
        scores_name, scores = self._per_box(outputs, self.scores, "decoder.scores", len(boxes), boxes_name)
        scores = activate(scores[:count], self.activation)
        require_probabilities(scores_name, scores, self.activation)
        xp = array_module(scores)
        keep = xp.flatnonzero(scores >= score_threshold)
        kept_boxes = boxes[keep]
        require_finite(boxes_name, kept_boxes)
        if self.classes is None:
            class_ids = xp.zeros(len(keep), np.int64)
        else:
            classes_name, classes = self._per_box(
                outputs, self.classes, "decoder.classes", len(boxes), boxes_name
            )
            require_finite(classes_name, classes[keep])
            class_ids = self._class_ids(classes_name, classes[keep])
        xyxy = to_xyxy(kept_boxes, self.box_format, self.normalized, geometry.network_size)
        return xyxy, scores[keep], class_ids

    def _valid_count(self, outputs: Mapping[str, npt.NDArray], capacity: int) -> int:
        if self.num_detections is None:
            return capacity
        name, tensor = select_output(outputs, self.num_detections, "decoder.num_detections")
        if tensor.size != 1:
            raise InferenceError(
                f"output '{name}' has shape {list(tensor.shape)}; expected the number of detections, one value"
            )
        require_finite(name, tensor)
        value = tensor.reshape(-1)[0]
        count = int(value)
        if count != value:
            raise InferenceError(f"output '{name}' says {float(value):.4g} detections, not a whole number")
        if not 0 <= count <= capacity:
            raise InferenceError(f"output '{name}' says {count} detections, but there are {capacity} boxes")
        return count

    @staticmethod
    def _per_box(
        outputs: Mapping[str, npt.NDArray], tensor: str, param: str, count: int, boxes_name: str
    ) -> tuple[str, npt.NDArray]:
        name, array = select_output(outputs, tensor, param)
        values = _batch_item(name, array, 1, "[N] or [B,N]")
        if len(values) != count:
            raise InferenceError(
                f"output '{name}' has shape {list(array.shape)}; expected {count} values, one per box of '{boxes_name}'"
            )
        return name, values


# Box columns a `rows` decoder accepts, by the box coding they form.
_ROW_BOX_COLUMNS = {fmt: BOX_FORMATS[fmt] for fmt in ("xyxy", "cxcywh", "xywh")}
_DEFAULT_COLUMNS = {"x1": 0, "y1": 1, "x2": 2, "y2": 3, "score": 4, "class": 5}


def _column_indices(params: DecoderParams) -> object:
    """``decoder.columns`` as a name -> index mapping; a list names the columns in order (null skips one)."""
    columns = params.value("columns", _DEFAULT_COLUMNS)
    if not isinstance(columns, list):
        return columns
    named = [name for name in columns if name is not None]
    if len(set(named)) != len(named) or not all(isinstance(name, str) for name in named):
        raise SpecError(f"{params.key('columns')}: expected distinct column names or null, got {columns!r}")
    return {name: index for index, name in enumerate(columns) if name is not None}


@dataclass
class RowsDecoder(DetectionDecoder):
    """One tensor ``[B,N,K]`` (or ``[N,K]``) with a detection per row, its columns named by ``columns``.

    ``columns`` maps names to column indices (``{x1: 0, y1: 1, ...}``) or lists the names in column
    order (``[x1, y1, x2, y2, score, class]``, null for a column to ignore). Box columns are
    ``x1,y1,x2,y2``, ``cx,cy,w,h`` or ``x1,y1,w,h``; ``score`` is required and ``class`` optional
    (all class 0 without it).
    """

    output: str | None
    box_format: str
    box_columns: list[int]
    score_column: int
    class_column: int | None
    normalized: bool
    activation: str

    @property
    def device_exact(self) -> bool:  # type: ignore[override]
        """Exact on the device only without an activation (a device ``exp`` may round differently)."""
        return self.activation == "none"

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> RowsDecoder:
        """Build from ``decoder.output``, ``columns``, ``normalized`` and ``class_offset``."""
        output = params.optional_string("output")
        columns = DecoderParams(_column_indices(params), params.key("columns"))
        present = set(columns.names())
        box_format = next((fmt for fmt, names in _ROW_BOX_COLUMNS.items() if set(names) <= present), None)
        if box_format is None:
            choices = " or ".join(",".join(names) for names in _ROW_BOX_COLUMNS.values())
            raise SpecError(
                f"{params.key('columns')}: needs box columns {choices}; got {', '.join(columns.names())}"
            )
        box_columns = [columns.integer(name, minimum=0) for name in _ROW_BOX_COLUMNS[box_format]]
        score_column = columns.integer("score", minimum=0)
        class_column = columns.integer("class", minimum=0) if "class" in present else None
        columns.finish()
        return cls(
            class_offset=class_offset_param(params),
            num_classes=num_classes,
            output=output,
            box_format=box_format,
            box_columns=box_columns,
            score_column=score_column,
            class_column=class_column,
            normalized=params.boolean("normalized", False),
            activation=score_activation(params, choices=("none", "sigmoid")),
        )

    def named_outputs(self) -> dict[str, str | None]:
        return {"decoder.output": self.output}

    def _used_columns(self) -> list[int]:
        return [*self.box_columns, self.score_column] + ([] if self.class_column is None else [self.class_column])

    def check_outputs(self, shapes: Mapping[str, Shape], network_size: tuple[int, int] | None) -> None:
        name, shape = declared_output(shapes, self.output, "decoder.output")
        if len(shape) not in (2, 3) or (shape[-1] is not None and shape[-1] <= max(self._used_columns())):
            raise shape_mismatch(
                "decoder.output",
                name,
                shape,
                f"[B,N,K] rows with K > {max(self._used_columns())} (decoder.columns)",
                shapes,
            )

    def decode_arrays(
        self, outputs: Mapping[str, Any], geometry: ResizeGeometry, score_threshold: float
    ) -> tuple[Any, Any, Any]:
        name, tensor = select_output(outputs, self.output, "decoder.output")
        rows = _batch_item(name, tensor, 2, "[N,K] or [B,N,K]")
        used = self._used_columns()
        if rows.shape[1] <= max(used):
            raise InferenceError(
                f"output '{name}' has shape {list(tensor.shape)}: {rows.shape[1]} columns, but decoder.columns "
                f"uses column {max(used)}"
            )
        scores = activate(rows[:, self.score_column], self.activation)
        require_probabilities(name, scores, self.activation)
        keep = array_module(scores).flatnonzero(scores >= score_threshold)
        selected = rows[keep]
        require_finite(name, selected[:, used])
        if self.class_column is None:
            class_ids = array_module(rows).zeros(len(selected), np.int64)
        else:
            class_ids = self._class_ids(name, selected[:, self.class_column])
        boxes = to_xyxy(
            selected[:, self.box_columns], self.box_format, self.normalized, geometry.network_size
        )
        return boxes, scores[keep], class_ids


@dataclass
class YoloDecoder(DetectionDecoder):
    """Raw YOLO heads, boxes ``cx,cy,w,h`` in network pixels, before NMS (set ``detection.nms_iou``).

    ``v5``: ``[B,N,5+C]`` rows (box, objectness, class scores; score = objectness * class score).
    ``v8`` (also YOLO11): ``[B,4+C,N]`` (box, class scores). ``auto`` tells them apart by the class
    count when the spec has labels, else by which dimension is longer (N exceeds 4+C).
    """

    nms_on_unclipped_boxes: ClassVar[bool] = True  # Ultralytics: NMS, then scale_boxes and clip_boxes
    output: str | None
    version: str
    normalized: bool
    activation: str
    extra_columns: int

    @property
    def device_exact(self) -> bool:  # type: ignore[override]
        """Exact on the device only without an activation (a device ``exp`` may round differently)."""
        return self.activation == "none"

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> YoloDecoder:
        """Build from ``decoder.output``, ``version`` (auto | v5 | v8), ``normalized``, ``class_offset``."""
        return cls(
            class_offset=class_offset_param(params),
            num_classes=num_classes,
            output=params.optional_string("output"),
            version=params.string("version", "auto", ("auto", "v5", "v8")),
            normalized=params.boolean("normalized", False),
            activation=score_activation(params, choices=("none", "sigmoid")),
            extra_columns=params.integer("extra_columns", 0, minimum=0),
        )

    def named_outputs(self) -> dict[str, str | None]:
        return {"decoder.output": self.output}

    def check_outputs(self, shapes: Mapping[str, Shape], network_size: tuple[int, int] | None) -> None:
        name, shape = declared_output(shapes, self.output, "decoder.output")
        if len(shape) != 3:
            raise shape_mismatch("decoder.output", name, shape, "[B,N,5+C] (YOLOv5) or [B,4+C,N] (YOLOv8)", shapes)
        static = tuple(dim for dim in shape if dim is not None)
        if len(static) == 3:
            try:
                self._version(name, static)
            except InferenceError as error:
                expected = str(error).split("expected ", 1)[-1]
                raise shape_mismatch("decoder.output", name, shape, expected, shapes) from error

    def decode_arrays(
        self, outputs: Mapping[str, Any], geometry: ResizeGeometry, score_threshold: float
    ) -> tuple[Any, Any, Any]:
        name, tensor = select_output(outputs, self.output, "decoder.output")
        require_rank(name, tensor, (3,), "[B,N,5+C] (YOLOv5) or [B,4+C,N] (YOLOv8)")
        version = self._version(name, tensor.shape)
        table = tensor[0]
        if table.size:
            finite_range(name, table)
        xp = array_module(table)
        if version == "v8":
            class_scores = activate(table[4 : len(table) - self.extra_columns].T, self.activation)
            require_probabilities(name, class_scores, self.activation)
            best = class_scores.max(axis=1)
            keep = xp.flatnonzero(best >= score_threshold)
            classes = xp.argmax(class_scores[keep], axis=1)
            boxes = table[:4, keep].T
        else:
            class_scores = activate(table[:, 5 : table.shape[1] - self.extra_columns], self.activation)
            objectness = activate(table[:, 4], self.activation)
            require_probabilities(name, class_scores, self.activation)
            require_probabilities(name, objectness, self.activation)
            best = objectness * class_scores.max(axis=1)
            keep = xp.flatnonzero(best >= score_threshold)
            classes = xp.argmax(class_scores[keep], axis=1)
            boxes = table[keep, :4]
        xyxy = to_xyxy(boxes, "cxcywh", self.normalized, geometry.network_size)
        return xyxy, best[keep], self._class_ids(name, classes)

    def _version(self, name: str, shape: tuple[int, ...]) -> str:
        _, rows, columns = shape
        known = self.num_classes
        fits = {
            "v8": rows >= 5 + self.extra_columns and (known is None or rows == 4 + known + self.extra_columns),
            "v5": columns >= 6 + self.extra_columns and (known is None or columns == 5 + known + self.extra_columns),
        }
        if self.version != "auto":
            candidates = [self.version] if fits[self.version] else []
        else:
            candidates = [version for version, fit in fits.items() if fit]
        if not candidates:
            classes = "C" if known is None else str(known)
            wanted = {"v8": f"[B,4+{classes},N]", "v5": f"[B,N,5+{classes}]"}
            expected = " or ".join(wanted[v] for v in (fits if self.version == "auto" else [self.version]))
            raise InferenceError(f"output '{name}' has shape {list(shape)}; expected a YOLO head {expected}")
        if len(candidates) == 2:
            return "v8" if rows < columns else "v5"
        return candidates[0]


@dataclass
class DetrDecoder(DetectionDecoder):
    """DETR: ``pred_logits [B,Q,C+1]`` (last class = no object) and ``pred_boxes [B,Q,4]``.

    Boxes are ``cx,cy,w,h`` normalized to the network input. Scores are the softmax probabilities
    of the best real class (no-object excluded, as in DETR's own post-processing); no NMS needed.
    ``score_activation: sigmoid`` (Deformable DETR, RT-DETR): every column is a class, no no-object column.
    Host only (``device_exact`` false): a device ``exp`` may round differently from numpy's.
    """

    logits: str
    boxes: str
    activation: str
    device_exact: ClassVar[bool] = False

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> DetrDecoder:
        """Build from ``decoder.logits`` (pred_logits), ``decoder.boxes`` (pred_boxes), ``class_offset``."""
        return cls(
            class_offset=class_offset_param(params),
            num_classes=num_classes,
            logits=params.string("logits", "pred_logits"),
            boxes=params.string("boxes", "pred_boxes"),
            activation=score_activation(params, "softmax", ("softmax", "sigmoid")),
        )

    def named_outputs(self) -> dict[str, str | None]:
        return {"decoder.logits": self.logits, "decoder.boxes": self.boxes}

    def check_outputs(self, shapes: Mapping[str, Shape], network_size: tuple[int, int] | None) -> None:
        """The declared logits have one column per label after ``class_offset`` (+ no-object with softmax)."""
        super().check_outputs(shapes, network_size)
        no_object = int(self.activation == "softmax")
        name, shape = declared_output(shapes, self.logits, "decoder.logits")
        columns = None if self.num_classes is None else self.num_classes + self.class_offset + no_object
        if len(shape) not in (2, 3) or not dims_agree(shape[-1], columns):
            classes = "C" if self.num_classes is None else f"{self.num_classes} labels + class_offset {self.class_offset}"
            expected = f"[B,Q,{classes}{' + 1 no-object' if no_object else ''}] (score_activation {self.activation})"
            raise shape_mismatch("decoder.logits", name, shape, expected, shapes)
        name, shape = declared_output(shapes, self.boxes, "decoder.boxes")
        if len(shape) not in (2, 3) or not dims_agree(shape[-1], 4):
            raise shape_mismatch("decoder.boxes", name, shape, "[B,Q,4]", shapes)

    def decode_arrays(
        self, outputs: Mapping[str, Any], geometry: ResizeGeometry, score_threshold: float
    ) -> tuple[Any, Any, Any]:
        logits_name, logits_tensor = select_output(outputs, self.logits, "decoder.logits")
        boxes_name, boxes_tensor = select_output(outputs, self.boxes, "decoder.boxes")
        logits = _batch_item(logits_name, logits_tensor, 2, "[B,Q,C+1]")
        boxes = _batch_item(boxes_name, boxes_tensor, 2, "[B,Q,4]")
        minimum = 2 if self.activation == "softmax" else 1
        if logits.shape[1] < minimum:
            raise InferenceError(
                f"output '{logits_name}' has shape {list(logits_tensor.shape)}; expected [B,Q,C+1] with C >= 1"
            )
        if boxes.shape != (len(logits), 4):
            raise InferenceError(
                f"output '{boxes_name}' has shape {list(boxes_tensor.shape)}; expected [B,{len(logits)},4] "
                f"to match '{logits_name}'"
            )
        require_finite(logits_name, logits)
        if self.activation == "softmax":  # the last class is "no object"
            probabilities = softmax(logits, axis=1)[:, :-1]
        else:
            probabilities = sigmoid(logits)
        scores = probabilities.max(axis=1)
        keep = np.flatnonzero(scores >= score_threshold)
        kept_boxes = boxes[keep]
        require_finite(boxes_name, kept_boxes)
        classes = self._class_ids(logits_name, np.argmax(probabilities[keep], axis=1))
        xyxy = to_xyxy(kept_boxes, "cxcywh", True, geometry.network_size)
        return xyxy, scores[keep], classes
