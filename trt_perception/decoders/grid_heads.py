"""Raw grid heads: YOLO with anchors (v3/v4/v7, v5), YOLOX, and distribution (DFL) heads (GFL, NanoDet,
YOLOv8 before its decode).

A head gives one tensor per stride (``outputs`` a list, in the order of ``strides``) or one tensor with
every stride's cells concatenated (``outputs`` a single name; anchor-free heads only). A level's
tensor may be ``[B,A*K,H,W]`` (NCHW), ``[B,H,W,A*K]`` (NHWC), ``[B,A,H,W,K]``, or rows ``[B,H*W,K]`` /
``[B,K,H*W]`` for one box per cell, where ``H, W = ceil(input / stride)`` and ``K`` is the values of
one box. The layout is recognised from the shape. Boxes come out in network-input pixels.

Per box, ``K`` values: ``yolo_anchors`` and ``yolox``: ``tx, ty, tw, th, objectness, C class scores``;
``dfl``: ``4 * bins`` distribution logits (left, top, right, bottom) then ``C`` class scores (or the
class scores in separate ``scores`` tensors). ``extra_columns`` trailing values (keypoints, masks) are
ignored. Objectness and class scores pass through ``score_activation``.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from trt_perception.decoders.boxes import to_xyxy
from trt_perception.decoders.detection import DetectionDecoder, SizeCache, class_offset_param
from trt_perception.decoders.params import DecoderParams
from trt_perception.decoders.scores import activate, require_probabilities, score_activation, sigmoid, softmax
from trt_perception.decoders.tensors import Shape, declared_output, require_finite, select_output, shape_mismatch
from trt_perception.errors import InferenceError, SpecError
from trt_perception.geometry import ResizeGeometry

CLASS_SELECTIONS = ("best", "all")
YOLO_VERSIONS = ("v3", "v5")


@dataclass(frozen=True)
class GridCells:
    """Per box row of the concatenated levels: cell column, cell row, stride, level and anchor index."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    stride: npt.NDArray[np.float32]
    level: npt.NDArray[np.intp]
    anchor: npt.NDArray[np.intp]


def level_grids(network_size: tuple[int, int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature map size ``(ceil(H / s), ceil(W / s))`` of each stride."""
    return [(math.ceil(network_size[0] / s), math.ceil(network_size[1] / s)) for s in strides]


def grid_cells(grids: Sequence[tuple[int, int]], strides: Sequence[int], anchors_per_cell: int) -> GridCells:
    """Cells of every level, row-major, ``anchors_per_cell`` rows per cell (the order ``level_rows`` gives)."""
    xs, ys, ss, ll, aa = [], [], [], [], []
    for level, ((height, width), stride) in enumerate(zip(grids, strides)):
        count = height * width * anchors_per_cell
        ys.append(np.repeat(np.arange(height), width * anchors_per_cell))
        xs.append(np.tile(np.repeat(np.arange(width), anchors_per_cell), height))
        aa.append(np.tile(np.arange(anchors_per_cell), height * width))
        ss.append(np.full(count, stride))
        ll.append(np.full(count, level))
    return GridCells(
        np.concatenate(xs).astype(np.float32),
        np.concatenate(ys).astype(np.float32),
        np.concatenate(ss).astype(np.float32),
        np.concatenate(ll),
        np.concatenate(aa),
    )


def _fits(dim: int | None, value: int | None) -> bool:
    return dim is None or value is None or dim == value


def match_layout(shape: Shape, grid: tuple[int, int], anchors: int, columns: int | None) -> str | None:
    """How one level's tensor (shape without the batch dimension) holds its boxes, or None if it cannot.

    ``NCHW`` ``[A*K,H,W]``, ``NHWC`` ``[H,W,A*K]``, ``AHWK`` ``[A,H,W,K]``, ``rows`` ``[H*W*A,K]`` or
    ``columns`` ``[K,H*W*A]`` (the last two only for one anchor per cell). ``columns`` None: any ``K``.
    """
    height, width = grid
    channels = None if columns is None else anchors * columns
    if len(shape) == 3:
        if _fits(shape[1], height) and _fits(shape[2], width) and _fits(shape[0], channels):
            if shape[0] is None or shape[0] % anchors == 0:
                return "NCHW"
        if _fits(shape[0], height) and _fits(shape[1], width) and _fits(shape[2], channels):
            if shape[2] is None or shape[2] % anchors == 0:
                return "NHWC"
    if len(shape) == 4 and all(_fits(d, v) for d, v in zip(shape, (anchors, height, width, columns))):
        return "AHWK"
    if len(shape) == 2 and anchors == 1:
        cells = height * width
        if _fits(shape[0], cells) and _fits(shape[1], columns):
            return "rows"
        if _fits(shape[1], cells) and _fits(shape[0], columns):
            return "columns"
    return None


def level_rows(item: npt.NDArray, layout: str, anchors: int) -> npt.NDArray:
    """One level's batch item as ``[H*W*A, K]`` rows ordered by cell row, column, then anchor."""
    if layout == "NCHW":
        channels, height, width = item.shape
        return (
            item.reshape(anchors, channels // anchors, height, width)
            .transpose(2, 3, 0, 1)
            .reshape(-1, channels // anchors)
        )
    if layout == "NHWC":
        return item.reshape(-1, item.shape[2] // anchors)
    if layout == "AHWK":
        return item.transpose(1, 2, 0, 3).reshape(-1, item.shape[3])
    if layout == "columns":
        return item.T
    return item


def _names(params: DecoderParams, key: str, required: bool = True) -> list[str] | str | None:
    value = params.value(key) if required else params.value(key, None)
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise SpecError(f"{params.key(key)}: expected a tensor name or a list of names (one per stride), got {value!r}")


def _strides(params: DecoderParams, levels: int | None) -> tuple[int, ...]:
    value = params.value("strides")
    if not (isinstance(value, list) and value and all(type(s) is int and s > 0 for s in value)):
        raise SpecError(f"{params.key('strides')}: expected a list of positive integers, got {value!r}")
    if levels is not None and len(value) != levels:
        raise SpecError(f"{params.key('strides')}: {len(value)} strides for {levels} tensors in decoder.outputs")
    return tuple(value)


@dataclass
class GridHeadDecoder(DetectionDecoder):
    """Shared reading of grid heads; subclasses give the values per box and decode boxes and scores."""

    nms_on_unclipped_boxes: ClassVar[bool] = True  # Darknet / OpenCV, YOLOX, Ultralytics: NMS, then clip
    outputs: list[str] | str
    strides: tuple[int, ...]
    activation: str
    class_selection: str
    extra_columns: int
    _cells: SizeCache[GridCells] = field(default_factory=SizeCache, repr=False, compare=False)
    device_exact: ClassVar[bool] = False
    fixed_columns: ClassVar[int] = 5  # box values (+ objectness) before the class scores

    @property
    def anchors_per_cell(self) -> int:
        """Boxes per grid cell."""
        return 1

    @staticmethod
    def common_params(params: DecoderParams, allow_concatenated: bool = True) -> dict[str, Any]:
        """The keys every grid head takes."""
        outputs = _names(params, "outputs")
        if isinstance(outputs, str) and not allow_concatenated:
            raise SpecError(f"{params.key('outputs')}: expected a list of tensor names, one per stride")
        return {
            "outputs": outputs,
            "strides": _strides(params, len(outputs) if isinstance(outputs, list) else None),
            "activation": score_activation(params),
            "class_selection": params.string("class_selection", "best", CLASS_SELECTIONS),
            "extra_columns": params.integer("extra_columns", 0, minimum=0),
            "class_offset": class_offset_param(params),
        }

    def box_columns(self) -> int:
        """Values before the class scores."""
        return self.fixed_columns

    def columns(self) -> int | None:
        """Values per box when the class count is known from the labels."""
        if self.num_classes is None:
            return None
        return self.box_columns() + self.num_classes + self.class_offset + self.extra_columns

    def cells(self, network_size: tuple[int, int]) -> GridCells:
        """Cell coordinates of every box row for this input size (the last few sizes' cells are kept)."""
        return self._cells.get(
            network_size, lambda size: grid_cells(level_grids(size, self.strides), self.strides, self.anchors_per_cell)
        )

    def _levels(self, network_size: tuple[int, int]) -> list[tuple[tuple[int, int], int]]:
        """(grid, anchors per cell) of each tensor in ``outputs``: one per stride, or all cells in one."""
        grids = level_grids(network_size, self.strides)
        if isinstance(self.outputs, list):
            return [(grid, self.anchors_per_cell) for grid in grids]
        return [((sum(h * w for h, w in grids), 1), self.anchors_per_cell)]

    def _tensor_layout(self, shape: Shape, grid: tuple[int, int], anchors: int, columns: int | None) -> str | None:
        if isinstance(self.outputs, str):  # all cells in one tensor: rows [N,K] or [K,N]
            cells = grid[0] * anchors
            if len(shape) == 2 and _fits(shape[0], cells) and _fits(shape[1], columns):
                return "rows"
            if len(shape) == 2 and _fits(shape[1], cells) and _fits(shape[0], columns):
                return "columns"
            return None
        return match_layout(shape, grid, anchors, columns)

    def _expected(self, grid: tuple[int, int], anchors: int, columns: int | None) -> str:
        k = "K" if columns is None else str(columns)
        if isinstance(self.outputs, str):
            return f"[B,{grid[0] * anchors},{k}] or [B,{k},{grid[0] * anchors}]"
        h, w = grid
        if anchors == 1:
            return f"[B,{k},{h},{w}], [B,{h},{w},{k}] or [B,{h * w},{k}]"
        return f"[B,{anchors}*{k},{h},{w}], [B,{h},{w},{anchors}*{k}] or [B,{anchors},{h},{w},{k}]"

    def tensor_groups(self) -> list[tuple[str, list[str] | str, int | None]]:
        """(parameter, tensor names, values per box) of each group of tensors the decoder reads."""
        return [("decoder.outputs", self.outputs, self.columns())]

    def check_outputs(self, shapes: Mapping[str, Shape], network_size: tuple[int, int] | None) -> None:
        for param, names, columns in self.tensor_groups():
            for index, name in enumerate([names] if isinstance(names, str) else names):
                key = param if isinstance(names, str) else f"{param}[{index}]"
                name, shape = declared_output(shapes, name, key)
                if len(shape) < 3:
                    raise shape_mismatch(key, name, shape, "a batch dimension then a grid or rows of boxes", shapes)
                if network_size is None:
                    continue
                grid, anchors = self._levels(network_size)[index]
                if self._tensor_layout(shape[1:], grid, anchors, columns) is None:
                    raise shape_mismatch(key, name, shape, self._expected(grid, anchors, columns), shapes)

    def gather(
        self,
        outputs: Mapping[str, Any],
        network_size: tuple[int, int],
        names: list[str] | str,
        param: str,
        columns: int | None,
    ) -> tuple[str, npt.NDArray]:
        """Rows ``[N,K]`` of every level of ``names`` concatenated (first tensor's name for messages)."""
        parts = []
        first = ""
        for index, ((grid, anchors), name) in enumerate(
            zip(self._levels(network_size), [names] if isinstance(names, str) else names)
        ):
            name, tensor = select_output(outputs, name, param)
            first = first or name
            layout = self._tensor_layout(tensor.shape[1:], grid, anchors, columns) if tensor.ndim >= 3 else None
            if layout is None:
                raise InferenceError(
                    f"output '{name}' has shape {list(tensor.shape)}; "
                    f"expected {self._expected(grid, anchors, columns)} "
                    f"for a {network_size[0]}x{network_size[1]} input"
                )
            parts.append(level_rows(tensor[0], layout, anchors))
        widths = {part.shape[1] for part in parts}
        if len(widths) != 1:
            raise InferenceError(f"the tensors of {param} give {sorted(widths)} values per box; expected one count")
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        require_finite(first, rows)
        return first, rows

    def class_scores(self, name: str, rows: npt.NDArray, first_class: int, after: int = 0) -> npt.NDArray:
        """Activated class scores ``[N,C]`` from column ``first_class`` up to the ``after`` columns that follow
        them and the trailing ``extra_columns``, checked to be probabilities."""
        stop = rows.shape[1] - self.extra_columns - after
        if stop <= first_class:
            raise InferenceError(
                f"output '{name}' has {rows.shape[1]} values per box: no class scores after {first_class} box values "
                f"and {self.extra_columns} extra columns"
            )
        scores = activate(rows[:, first_class:stop], self.activation, axis=1)
        require_probabilities(name, scores, self.activation)
        return scores

    def select(self, scores: npt.NDArray, score_threshold: float) -> tuple[npt.NDArray, npt.NDArray, npt.NDArray]:
        """Rows, classes and scores at or above the threshold: the best class per box, or every class."""
        if self.class_selection == "best":
            classes = scores.argmax(axis=1)
            best = np.take_along_axis(scores, classes[:, None], axis=1)[:, 0]
            rows = np.flatnonzero(best >= score_threshold)
            return rows, classes[rows], best[rows]
        rows, classes = np.nonzero(scores >= score_threshold)
        return rows, classes, scores[rows, classes]


@dataclass
class ObjectnessGridDecoder(GridHeadDecoder):
    """Heads with ``tx, ty, tw, th, objectness, classes`` per box: score = objectness * class score."""

    def decode_arrays(
        self, outputs: Mapping[str, Any], geometry: ResizeGeometry, score_threshold: float
    ) -> tuple[Any, Any, Any]:
        name, rows = self.gather(outputs, geometry.network_size, self.outputs, "decoder.outputs", self.columns())
        objectness = activate(rows[:, 4], self.activation)
        require_probabilities(name, objectness, self.activation)
        scores = self.class_scores(name, rows, 5) * objectness[:, None]
        kept, classes, best = self.select(scores, score_threshold)
        cells = self.cells(geometry.network_size)
        grid = np.stack([cells.x[kept], cells.y[kept]], axis=1)
        boxes = self.cxcywh(rows[kept, :4].astype(np.float32), grid, cells.stride[kept, None], cells, kept)
        return to_xyxy(boxes, "cxcywh", False, geometry.network_size), best, self._class_ids(name, classes)

    @abstractmethod
    def cxcywh(
        self, t: npt.NDArray[np.float32], grid: npt.NDArray, stride: npt.NDArray, cells: GridCells, kept: npt.NDArray
    ) -> npt.NDArray[np.float32]:
        """Boxes ``cx, cy, w, h`` (input pixels) from the raw values ``t`` of the kept rows, their cells
        (column, row) and strides."""


@dataclass
class YoloAnchorDecoder(ObjectnessGridDecoder):
    """``yolo_anchors``: per-stride YOLO heads with anchors in input pixels.

    ``v3`` (v3, v4, v7-tiny style): centre ``((sigmoid(t) * scale_x_y - (scale_x_y - 1) / 2) + cell) * stride``,
    size ``exp(t) * anchor``. ``v5`` (v5, v7): centre ``(2 * sigmoid(t) - 0.5 + cell) * stride``, size
    ``(2 * sigmoid(t))**2 * anchor``. Score = objectness * class score.
    """

    anchor_sizes: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0, 2), np.float32))
    version: str = "v3"
    scale_x_y: float = 1.0

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> YoloAnchorDecoder:
        """Build from ``outputs`` (one per stride), ``strides``, ``anchors``, ``version``, ``scale_x_y`` and the
        common keys."""
        common = cls.common_params(params, allow_concatenated=False)
        anchors = params.value("anchors")
        levels = len(common["strides"])
        try:
            with np.errstate(over="ignore"):  # a size beyond float32 becomes inf, refused below
                sizes = np.asarray(anchors, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float's range
            sizes = np.zeros(0, np.float32)
        if (
            sizes.ndim != 3 or sizes.shape[0] != levels or sizes.shape[2] != 2
            or not (sizes > 0).all() or not np.isfinite(sizes).all()
        ):
            raise SpecError(
                f"{params.key('anchors')}: expected one list of [width, height] pairs (input pixels) per stride, "
                f"{levels} lists of equal length, got {anchors!r}"
            )
        return cls(
            num_classes=num_classes,
            **common,
            anchor_sizes=sizes,
            version=params.string("version", "v3", YOLO_VERSIONS),
            scale_x_y=params.number("scale_x_y", 1.0, minimum=1.0),
        )

    @property
    def anchors_per_cell(self) -> int:
        return int(self.anchor_sizes.shape[1])

    def cxcywh(
        self, t: npt.NDArray[np.float32], grid: npt.NDArray, stride: npt.NDArray, cells: GridCells, kept: npt.NDArray
    ) -> npt.NDArray[np.float32]:
        size = self.anchor_sizes[cells.level[kept], cells.anchor[kept]]
        sig = sigmoid(t)
        if self.version == "v5":
            centre = (2.0 * sig[:, :2] - 0.5 + grid) * stride
            extent = (2.0 * sig[:, 2:]) ** 2 * size
        else:
            factor = np.float32(self.scale_x_y)
            centre = (sig[:, :2] * factor - (factor - 1) / 2 + grid) * stride
            extent = np.exp(t[:, 2:]) * size
        return np.concatenate([centre, extent], axis=1)


@dataclass
class YoloxDecoder(ObjectnessGridDecoder):
    """``yolox``: anchor-free ``tx, ty, tw, th, objectness, classes`` per cell; centre ``(t + cell + cell_offset)
    * stride``, size ``exp(t) * stride``; score = objectness * class score."""

    cell_offset: float = 0.0

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> YoloxDecoder:
        """Build from ``outputs``, ``strides``, ``cell_offset`` and the common keys."""
        return cls(num_classes=num_classes, **cls.common_params(params), cell_offset=params.number("cell_offset", 0.0))

    def cxcywh(
        self, t: npt.NDArray[np.float32], grid: npt.NDArray, stride: npt.NDArray, cells: GridCells, kept: npt.NDArray
    ) -> npt.NDArray[np.float32]:
        centre = (t[:, :2] + grid + np.float32(self.cell_offset)) * stride
        return np.concatenate([centre, np.exp(t[:, 2:]) * stride], axis=1)


@dataclass
class DistributionDecoder(GridHeadDecoder):
    """``dfl``: per side (left, top, right, bottom) ``bins`` logits; distance = softmax expectation over
    ``0..bins-1`` times the stride, from the point ``(cell + cell_offset) * stride`` (GFL and NanoDet: offset
    0; YOLOv8: 0.5). Class scores follow the box values (``order: boxes_first``), precede them
    (``scores_first``, NanoDet's single output), or come from separate ``scores`` tensors."""

    bins: int = 8
    cell_offset: float = 0.0
    scores: list[str] | str | None = None
    order: str = "boxes_first"

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> DistributionDecoder:
        """Build from ``outputs``, ``scores`` (optional), ``strides``, ``bins``, ``cell_offset`` and the common keys."""
        common = cls.common_params(params)
        scores = _names(params, "scores", required=False)
        if scores is not None and (
            isinstance(scores, str) != isinstance(common["outputs"], str)
            or (isinstance(scores, list) and len(scores) != len(common["outputs"]))
        ):
            raise SpecError(f"{params.key('scores')}: expected the same number of tensors as decoder.outputs")
        return cls(
            num_classes=num_classes,
            **common,
            bins=params.integer("bins", minimum=2),
            cell_offset=params.number("cell_offset", 0.0),
            scores=scores,
            order=params.string("order", "boxes_first", ("boxes_first", "scores_first")),
        )

    def box_columns(self) -> int:
        return 4 * self.bins

    def columns(self) -> int | None:
        if self.scores is not None:
            return self.box_columns()
        return super().columns()

    def tensor_groups(self) -> list[tuple[str, list[str] | str, int | None]]:
        groups = super().tensor_groups()
        if self.scores is not None:
            classes = None if self.num_classes is None else self.num_classes + self.class_offset + self.extra_columns
            groups.append(("decoder.scores", self.scores, classes))
        return groups

    def decode_arrays(
        self, outputs: Mapping[str, Any], geometry: ResizeGeometry, score_threshold: float
    ) -> tuple[Any, Any, Any]:
        size = geometry.network_size
        name, rows = self.gather(outputs, size, self.outputs, "decoder.outputs", self.columns())
        box_start = 0
        if self.scores is None and self.order == "scores_first":
            scores = self.class_scores(name, rows, 0, after=self.box_columns())
            box_start = scores.shape[1]
        elif self.scores is None:
            scores = self.class_scores(name, rows, self.box_columns())
        else:
            scores_name, score_rows = self.gather(
                outputs, size, self.scores, "decoder.scores", self.tensor_groups()[1][2]
            )
            if len(score_rows) != len(rows) or rows.shape[1] != self.box_columns():
                raise InferenceError(
                    f"outputs '{name}' and '{scores_name}' give {rows.shape} box values and {score_rows.shape} scores; "
                    f"expected {self.box_columns()} box values per row and one score row per box row"
                )
            name, scores = scores_name, self.class_scores(scores_name, score_rows, 0)
        kept, classes, best = self.select(scores, score_threshold)
        cells = self.cells(size)
        logits = rows[kept, box_start : box_start + self.box_columns()].reshape(len(kept), 4, self.bins)
        distances = softmax(logits, axis=2) @ np.arange(self.bins, dtype=np.float32)
        stride = cells.stride[kept, None]
        point = (np.stack([cells.x[kept], cells.y[kept]], axis=1) + np.float32(self.cell_offset)) * stride
        boxes = np.concatenate([point - distances[:, :2] * stride, point + distances[:, 2:] * stride], axis=1)
        return to_xyxy(boxes, "xyxy", False, size), best, self._class_ids(name, classes)
