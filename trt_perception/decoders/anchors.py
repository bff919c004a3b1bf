"""Anchor boxes for SSD-style detectors, generated as the model's training framework does, or read from a file.

Every generator returns a float32 ``[N,4]`` array of ``(y_center, x_center, height, width)`` normalized to
the network input, in the order the model's box predictor emits its rows (feature map by feature map,
then row, column and anchor of a cell). Generators:

- ``ssd``: TF Object Detection API ``ssd_anchor_generator`` (``create_ssd_anchors``: scales linear
  from ``min_scale`` to ``max_scale``, an interpolated scale per layer, optionally three boxes in the
  lowest layer), over ``feature_map_sizes``.
- ``multiscale``: TF Object Detection API ``multiscale_anchor_generator`` (RetinaNet / FPN): levels
  ``min_level..max_level``, base size ``anchor_scale * 2**level``, ``scales_per_octave`` scales.
- ``mediapipe``: MediaPipe's ``SsdAnchorsCalculator`` options (``strides``, optional fixed anchor size).
- ``file``: a ``.npy`` or text file of ``N`` rows ``y_center x_center height width``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from trt_perception.decoders.params import DecoderParams, checked_data_file, is_finite_number
from trt_perception.errors import SpecError

ANCHOR_GENERATORS = ("ssd", "multiscale", "mediapipe", "file")
# The most anchors a generator makes: far beyond any box predictor's rows (YOLOv8 at 640x640: 8,400;
# RetinaNet at 1024x1024: about 196,000), yet while they are built (float64, 32 bytes each, the layers'
# arrays and their concatenation) under 1 GB. A feature map size or stride mistyped by a few digits
# asks for billions: a spec error, not an out-of-memory traceback.
MAX_ANCHORS = 10_000_000

# One feature map: (rows, columns) of cells, ``[K,2]`` box sizes, stride (y, x) and first centre (y, x).
GridLayer = tuple[tuple[int, int], npt.NDArray[np.float64], tuple[float, float], tuple[float, float]]


def grid_anchors(
    grid_size: tuple[int, int],
    box_sizes: npt.NDArray[np.float64],
    stride: tuple[float, float],
    offset: tuple[float, float],
) -> npt.NDArray[np.float64]:
    """Anchors of one feature map: every cell (row-major) takes every box size ``[K,2]`` (height, width).

    Centres are ``offset + index * stride`` (y, x); returns ``[H*W*K, 4]`` (cy, cx, h, w).
    """
    height, width = grid_size
    centers_y = offset[0] + np.arange(height) * stride[0]
    centers_x = offset[1] + np.arange(width) * stride[1]
    cy, cx = np.meshgrid(centers_y, centers_x, indexing="ij")
    count = len(box_sizes)
    anchors = np.empty((height, width, count, 4))
    anchors[..., 0] = cy[..., None]
    anchors[..., 1] = cx[..., None]
    anchors[..., 2:] = box_sizes
    return anchors.reshape(-1, 4)


def layers_anchors(
    layers: Sequence[GridLayer], network_size: tuple[int, int], unit: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[np.float32]:
    """The anchors of every layer (``grid_anchors``) in order, divided by ``unit`` (cy, cx, h, w) when
    given, as float32; SpecError, before any is made, when they would be more than MAX_ANCHORS."""
    count = sum(grid[0] * grid[1] * len(sizes) for grid, sizes, _, _ in layers)
    if count > MAX_ANCHORS:
        shapes = ", ".join(f"{grid[0]}x{grid[1]}x{len(sizes)}" for grid, sizes, _, _ in layers)
        raise SpecError(
            f"decoder.anchors: {count} anchors for a {network_size[1]}x{network_size[0]} network input (width x "
            f"height; per feature map, rows x columns x boxes per cell: {shapes}), more than the {MAX_ANCHORS} any "
            "box predictor emits; check the feature map sizes, strides or levels, and a dynamic input.size's "
            "max_long_side"
        )
    anchors = np.concatenate([grid_anchors(*layer) for layer in layers])
    if unit is not None:
        np.divide(anchors, unit, out=anchors)
    return anchors.astype(np.float32)


def _box_sizes(scales: Sequence[float], aspect_ratios: Sequence[float]) -> npt.NDArray[np.float64]:
    """``[K,2]`` (height, width) of boxes with area ``scale**2`` and width/height ``aspect_ratio``."""
    scale = np.asarray(scales, dtype=np.float64)
    ratio_sqrt = np.sqrt(np.asarray(aspect_ratios, dtype=np.float64))
    return np.stack([scale / ratio_sqrt, scale * ratio_sqrt], axis=1)


def ssd_layer_boxes(
    num_layers: int,
    min_scale: float,
    max_scale: float,
    aspect_ratios: Sequence[float],
    interpolated_scale_aspect_ratio: float,
    reduce_boxes_in_lowest_layer: bool,
    scales: Sequence[float] | None = None,
) -> list[tuple[list[float], list[float]]]:
    """(scales, aspect ratios) of the boxes of each layer, as TF OD API's ``create_ssd_anchors`` lists them."""
    if scales is None:
        step = (max_scale - min_scale) / (num_layers - 1) if num_layers > 1 else 0.0
        scales = [min_scale + step * layer for layer in range(num_layers)]
    all_scales = [*scales, 1.0]
    layers = []
    for layer in range(num_layers):
        scale, scale_next = all_scales[layer], all_scales[layer + 1]
        if layer == 0 and reduce_boxes_in_lowest_layer:
            layers.append(([0.1, scale, scale], [1.0, 2.0, 0.5]))
            continue
        layer_scales = [scale] * len(aspect_ratios)
        layer_ratios = list(aspect_ratios)
        if interpolated_scale_aspect_ratio > 0:
            layer_scales.append(math.sqrt(scale * scale_next))
            layer_ratios.append(interpolated_scale_aspect_ratio)
        layers.append((layer_scales, layer_ratios))
    return layers


@dataclass(frozen=True)
class SsdAnchors:
    """TF OD API ``ssd_anchor_generator`` over explicit feature map sizes."""

    feature_map_sizes: tuple[tuple[int, int], ...]
    min_scale: float
    max_scale: float
    aspect_ratios: tuple[float, ...]
    interpolated_scale_aspect_ratio: float
    reduce_boxes_in_lowest_layer: bool
    scales: tuple[float, ...] | None
    base_anchor_size: tuple[float, float]

    def generate(self, network_size: tuple[int, int]) -> npt.NDArray[np.float32]:
        layers = ssd_layer_boxes(
            len(self.feature_map_sizes),
            self.min_scale,
            self.max_scale,
            self.aspect_ratios,
            self.interpolated_scale_aspect_ratio,
            self.reduce_boxes_in_lowest_layer,
            self.scales,
        )
        # MultipleGridAnchorGenerator keeps anchors square in pixels on a non-square input.
        height, width = network_size
        shortest = min(height, width)
        base = np.array([self.base_anchor_size[0] * shortest / height, self.base_anchor_size[1] * shortest / width])
        grids: list[GridLayer] = []
        for (grid_h, grid_w), (scales, ratios) in zip(self.feature_map_sizes, layers):
            stride = (1.0 / grid_h, 1.0 / grid_w)
            offset = (0.5 * stride[0], 0.5 * stride[1])
            grids.append(((grid_h, grid_w), _box_sizes(scales, ratios) * base, stride, offset))
        return layers_anchors(grids, network_size)


@dataclass(frozen=True)
class MultiscaleAnchors:
    """TF OD API ``multiscale_anchor_generator`` (RetinaNet, SSD FPN)."""

    min_level: int
    max_level: int
    anchor_scale: float
    aspect_ratios: tuple[float, ...]
    scales_per_octave: int

    def generate(self, network_size: tuple[int, int]) -> npt.NDArray[np.float32]:
        height, width = network_size
        octave_scales = [2.0 ** (step / self.scales_per_octave) for step in range(self.scales_per_octave)]
        # Aspect ratio outer, scale inner: the order of the generator's meshgrid.
        scales = [scale for _ in self.aspect_ratios for scale in octave_scales]
        ratios = [ratio for ratio in self.aspect_ratios for _ in octave_scales]
        grids: list[GridLayer] = []
        for level in range(self.min_level, self.max_level + 1):
            stride = 2.0**level
            sizes = _box_sizes(scales, ratios) * stride * self.anchor_scale
            grid = (math.ceil(height / stride), math.ceil(width / stride))
            # The generator centres anchors in their cells only where the side divides by the stride.
            offset = (stride / 2.0 if height % stride == 0 else 0.0, stride / 2.0 if width % stride == 0 else 0.0)
            grids.append((grid, sizes, (stride, stride), offset))
        return layers_anchors(grids, network_size, np.array([height, width, height, width], np.float64))  # to normalized


@dataclass(frozen=True)
class MediaPipeAnchors:
    """MediaPipe ``SsdAnchorsCalculator`` options (one layer per stride; ``fixed_anchor_size`` gives every
    anchor size 1)."""

    min_scale: float
    max_scale: float
    strides: tuple[int, ...]
    aspect_ratios: tuple[float, ...]
    anchor_offset_x: float
    anchor_offset_y: float
    interpolated_scale_aspect_ratio: float
    reduce_boxes_in_lowest_layer: bool
    fixed_anchor_size: bool

    def _scale(self, index: int) -> float:
        if len(self.strides) == 1:
            return (self.min_scale + self.max_scale) * 0.5
        return self.min_scale + (self.max_scale - self.min_scale) * index / (len(self.strides) - 1)

    def generate(self, network_size: tuple[int, int]) -> npt.NDArray[np.float32]:
        height, width = network_size
        grids: list[GridLayer] = []
        layer = 0
        while layer < len(self.strides):
            scales: list[float] = []
            ratios: list[float] = []
            same = layer
            # Layers that share a stride share one feature map: their boxes are pooled per cell.
            while same < len(self.strides) and self.strides[same] == self.strides[layer]:
                scale = self._scale(same)
                if same == 0 and self.reduce_boxes_in_lowest_layer:
                    scales += [0.1, scale, scale]
                    ratios += [1.0, 2.0, 0.5]
                else:
                    scales += [scale] * len(self.aspect_ratios)
                    ratios += list(self.aspect_ratios)
                    if self.interpolated_scale_aspect_ratio > 0:
                        scale_next = 1.0 if same == len(self.strides) - 1 else self._scale(same + 1)
                        scales.append(math.sqrt(scale * scale_next))
                        ratios.append(self.interpolated_scale_aspect_ratio)
                same += 1
            stride = self.strides[layer]
            grid = (math.ceil(height / stride), math.ceil(width / stride))
            sizes = np.ones((len(scales), 2)) if self.fixed_anchor_size else _box_sizes(scales, ratios)
            step = (1.0 / grid[0], 1.0 / grid[1])
            offset = (self.anchor_offset_y * step[0], self.anchor_offset_x * step[1])
            grids.append((grid, sizes, step, offset))
            layer = same
        return layers_anchors(grids, network_size)


@dataclass(frozen=True)
class FileAnchors:
    """Anchors read once from a ``.npy`` file or a text file (``N`` rows ``cy cx h w``, normalized)."""

    anchors: npt.NDArray[np.float32]

    def generate(self, network_size: tuple[int, int]) -> npt.NDArray[np.float32]:
        return self.anchors


AnchorGenerator = SsdAnchors | MultiscaleAnchors | MediaPipeAnchors | FileAnchors


def _numbers(params: DecoderParams, name: str, default: object = None, count: int | None = None) -> tuple[float, ...]:
    value = params.value(name, default)
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(is_finite_number(v) for v in value)
        or (count is not None and len(value) != count)
    ):
        wanted = f"{count} numbers" if count is not None else "a non-empty list of numbers"
        raise SpecError(f"{params.key(name)}: expected {wanted}, got {value!r}")
    return tuple(float(v) for v in value)


def _pair(values: tuple[float, ...]) -> tuple[float, float]:
    return values[0], values[1]


def _positive_ratios(params: DecoderParams, default: object) -> tuple[float, ...]:
    ratios = _numbers(params, "aspect_ratios", default)
    if min(ratios) <= 0:
        raise SpecError(f"{params.key('aspect_ratios')}: aspect ratios must be positive, got {list(ratios)}")
    return ratios


def _feature_map_sizes(params: DecoderParams) -> tuple[tuple[int, int], ...]:
    value = params.value("feature_map_sizes")
    sizes: list[tuple[int, int]] = []
    if isinstance(value, list) and value:
        for item in value:
            pair = [item, item] if isinstance(item, int) and not isinstance(item, bool) else item
            if not (isinstance(pair, list) and len(pair) == 2 and all(type(v) is int and v > 0 for v in pair)):
                sizes = []
                break
            sizes.append((pair[0], pair[1]))
    if not sizes:
        raise SpecError(
            f"{params.key('feature_map_sizes')}: expected a list of feature map sizes (n or [height, width]), "
            f"got {value!r}"
        )
    return tuple(sizes)


def _scale_range(params: DecoderParams) -> tuple[float, float]:
    low = params.number("min_scale", 0.2, minimum=0.0)
    high = params.number("max_scale", 0.95, minimum=low)
    return low, high


def _read_anchor_file(params: DecoderParams, base_dir: Path | None) -> FileAnchors:
    given = params.string("path")
    path = Path(given).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    checked_data_file(path, params.key("path"), "anchors")
    try:
        values = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as error:
        raise SpecError(f"{params.key('path')}: cannot read anchors from {path}: {error}") from error
    anchors = np.asarray(values, dtype=np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4 or not len(anchors) or not np.isfinite(anchors).all():
        raise SpecError(
            f"{params.key('path')}: {path} holds shape {list(anchors.shape)}; expected N finite rows of "
            "y_center, x_center, height, width"
        )
    return FileAnchors(anchors)


def anchors_from_params(params: DecoderParams, base_dir: Path | None) -> AnchorGenerator:
    """The generator described by ``decoder.anchors`` (its ``type`` plus that generator's keys)."""
    kind = params.string("type", choices=ANCHOR_GENERATORS)
    if kind == "file":
        return _read_anchor_file(params, base_dir)
    if kind == "multiscale":
        min_level = params.integer("min_level", 3, minimum=0)
        return MultiscaleAnchors(
            min_level=min_level,
            max_level=params.integer("max_level", 7, minimum=min_level),
            anchor_scale=params.number("anchor_scale", 4.0, minimum=0.0),
            aspect_ratios=_positive_ratios(params, [1.0, 2.0, 0.5]),
            scales_per_octave=params.integer("scales_per_octave", 2, minimum=1),
        )
    if kind == "mediapipe":
        strides = params.value("strides")
        if not (isinstance(strides, list) and strides and all(type(s) is int and s > 0 for s in strides)):
            raise SpecError(f"{params.key('strides')}: expected a list of positive integers, got {strides!r}")
        min_scale, max_scale = _scale_range(params)
        return MediaPipeAnchors(
            min_scale=min_scale,
            max_scale=max_scale,
            strides=tuple(strides),
            aspect_ratios=_positive_ratios(params, [1.0]),
            anchor_offset_x=params.number("anchor_offset_x", 0.5),
            anchor_offset_y=params.number("anchor_offset_y", 0.5),
            interpolated_scale_aspect_ratio=params.number("interpolated_scale_aspect_ratio", 1.0),
            reduce_boxes_in_lowest_layer=params.boolean("reduce_boxes_in_lowest_layer", False),
            fixed_anchor_size=params.boolean("fixed_anchor_size", False),
        )
    sizes = _feature_map_sizes(params)
    min_scale, max_scale = _scale_range(params)
    scales = params.value("scales", None)
    return SsdAnchors(
        feature_map_sizes=sizes,
        min_scale=min_scale,
        max_scale=max_scale,
        aspect_ratios=_positive_ratios(params, [1.0, 2.0, 0.5, 3.0, 1.0 / 3.0]),
        interpolated_scale_aspect_ratio=params.number("interpolated_scale_aspect_ratio", 1.0),
        reduce_boxes_in_lowest_layer=params.boolean("reduce_boxes_in_lowest_layer", True),
        scales=None if scales is None else _numbers(params, "scales", count=len(sizes)),
        base_anchor_size=_pair(_numbers(params, "base_anchor_size", [1.0, 1.0], count=2)),
    )
