"""GPU twins of the segmentation decoders: labels computed where the scores already are.

``GpuSegmentationDecoder`` wraps a CPU decoder (``LogitsDecoder``, ``BinaryDecoder`` or
``LabelsDecoder`` from ``create_decoder``) and reads its parameters, so both paths are configured by
the same spec. Outputs are cupy arrays; labels stay on the device until the caller fetches them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trt_perception.decoders.segmentation import (
    BinaryDecoder,
    LabelsDecoder,
    LogitsDecoder,
    SegmentationDecoder,
    label_dtype,
)
from trt_perception.decoders.tensors import require_rank, single_channel_map
from trt_perception.decoders.upsampling import opencv_takes_area_path, resize_channel_groups
from trt_perception.errors import InferenceError
from trt_perception.geometry import ResizeGeometry
from trt_perception.gpu._cupy import require_cupy
from trt_perception.gpu.kernels import BLOCK_2D, grid_2d, postprocess_module
from trt_perception.gpu.preprocess import SOURCE_CHANNELS
from trt_perception.gpu.resize_tables import area_shortcut_sums_in_sequence, linear_taps, nearest_indices
from trt_perception.preprocess import CHANNELS_PER_ORDER


@dataclass(frozen=True)
class DecodePlan:
    """How one score tensor becomes labels on the device (``GpuSegmentationDecoder.plan``)."""

    scores: Any  # contiguous float32/float16 device scores, [C,H,W] / [H,W,C] / [H,W]
    channels: int
    map_size: tuple[int, int]
    channels_last: bool
    threshold: float  # binary maps: the cut in the output's units
    upsample: bool  # bilinear scores before the decision; else decide, then nearest labels
    label_dtype: np.dtype
    window_origin: tuple[int, int]  # (row0, col0) of the content window in the map
    output_size: tuple[int, int]
    tables: list[Any]  # x0, x1, a0, a1, y0, y1, b0, b1 (nearest plans use x0 and y0)
    # upsampling a map exactly twice the output's size: per channel and output column, 1 where OpenCV's
    # area shortcut sums in sequence (``area_sequence_table``); else None
    area_sequence: Any = None


# The CPU decoders that have a GPU version here.
GPU_DECODERS = (LogitsDecoder, BinaryDecoder, LabelsDecoder)

# Up to this many channels the fused kernel decides each output pixel from the scores itself; above,
# the map is decided once at its own resolution (each output pixel would re-read all channels).
FUSED_DECISION_MAX_CHANNELS = 4


class GpuSegmentationDecoder:
    """Labels on the GPU for the same spec and outputs as ``decoder`` produces on the CPU."""

    def __init__(self, decoder: SegmentationDecoder) -> None:
        if not isinstance(decoder, GPU_DECODERS):
            raise ValueError(f"no GPU version of decoder {type(decoder).__name__}")
        self.cupy = require_cupy()
        self.decoder = decoder
        self._flag = self.cupy.zeros(1, self.cupy.int32)
        self._tables: dict[tuple[Any, ...], list[Any]] = {}

    def decode(
        self, outputs: Mapping[str, Any], geometry: ResizeGeometry, at_source: bool, check_finite: bool = True
    ) -> Any:
        """Labels ``HxW`` (cupy uint8/uint16) at source size when ``at_source``, else network size.

        ``check_finite`` rejects NaN/Inf scores as the CPU decoders do; it waits for the device.
        Without it (scores checked elsewhere) the call only enqueues kernels, e.g. into a CUDA graph.
        """
        name, tensor = self.select(outputs)
        decoder = self.decoder
        if isinstance(decoder, LabelsDecoder):
            return self._resample_labels(self._class_indices(name, tensor), geometry, at_source)
        plan = self.plan(name, tensor, geometry, at_source)
        labels = self.cupy.empty(plan.output_size, plan.label_dtype)
        if check_finite:
            self._flag.fill(0)
        self.launch(plan, labels, flag=self._flag if check_finite else None)
        if check_finite and int(self._flag[0]):
            raise InferenceError(f"output '{name}' contains NaN or infinite values")
        return labels

    def plan(self, name: str, tensor: Any, geometry: ResizeGeometry, at_source: bool) -> DecodePlan:
        """Check a score tensor (logits or binary decoder) and work out its decoding (tables made
        and uploaded once per size); launches nothing."""
        decoder = self.decoder
        if isinstance(decoder, LogitsDecoder):
            require_rank(name, tensor, (4,), "[B,C,H,W]" if decoder.layout == "NCHW" else "[B,H,W,C]")
            channels_last = decoder.layout == "NHWC"
            scores = self.cupy.ascontiguousarray(tensor[0])
            channels, height, width = (scores.shape[2], *scores.shape[:2]) if channels_last else scores.shape
            if channels < 2:
                raise InferenceError(f"output '{name}' has {channels} class channels; the logits decoder needs at least 2")
            if decoder.num_classes is not None and channels != decoder.num_classes:
                raise InferenceError(
                    f"output '{name}' has {channels} class channels but the spec has {decoder.num_classes} labels"
                )
            dtype: Any = label_dtype(channels)
            upsample = decoder.upsample == "before_argmax"
            threshold = 0.0
        elif isinstance(decoder, BinaryDecoder):
            scores = self.cupy.ascontiguousarray(single_channel_map(name, tensor))
            channels_last, channels, dtype = False, 1, np.uint8
            (height, width) = scores.shape
            upsample = decoder.upsample == "before_threshold"
            threshold = decoder.threshold_cut
        else:
            raise ValueError(f"decoder {type(decoder).__name__} has no score plan (its labels come from the graph)")
        if scores.dtype not in (np.float32, np.float16):
            scores = scores.astype(np.float32)
        row0, col0, rows, cols, output_size = self._window_and_size((height, width), geometry, at_source)
        tables = self._linear_tables(rows, cols, output_size) if upsample else self._nearest_tables(rows, cols, output_size)
        halved = upsample and opencv_takes_area_path((rows, cols), output_size)
        return DecodePlan(
            scores, channels, (height, width), channels_last, float(threshold), upsample, np.dtype(dtype),
            (row0, col0), output_size, tables, self._area_sequence(channels, output_size[1]) if halved else None,
        )

    def label_map(self, plan: DecodePlan) -> Any:
        """Labels at the score map's resolution (a reused buffer) for plans that decide before
        resampling and have more than ``FUSED_DECISION_MAX_CHANNELS`` channels, else None (the
        fused kernel decides per output pixel)."""
        if plan.upsample or plan.channels <= FUSED_DECISION_MAX_CHANNELS:
            return None
        key = ("map", plan.map_size, plan.label_dtype.name)
        if key not in self._tables:
            self._tables[key] = [self.cupy.empty(plan.map_size, plan.label_dtype)]
        return self._tables[key][0]

    def launch(self, plan: DecodePlan, labels: Any, colours: Any = None, overlay: Any = None,
               palette: Any = None, image: tuple[Any, int, str] | None = None, alpha: float = 0.5,
               flag: Any = None) -> None:
        """Enqueue the decoding of ``plan`` into ``labels`` and, when given, the palette colours into
        ``colours`` and their blend onto ``image`` (device bytes, row step, channel order) into
        ``overlay``: one fused kernel (plus the decision at map resolution for many-class maps).
        ``flag`` (a zeroed int32 on the device) is set when a score is NaN or infinite."""
        (height, width), (row0, col0), (out_h, out_w) = plan.map_size, plan.window_origin, plan.output_size
        module = postprocess_module(str(plan.scores.dtype), plan.label_dtype.name, plan.upsample)
        label_map = self.label_map(plan)
        i32, f32 = np.int32, np.float32
        null = np.uintp(0)
        if label_map is not None:  # reads every score: checks them on the way
            plane = height * width
            module.get_function("decide_labels")(
                ((plane + 255) // 256,), (256,),
                (plan.scores, i32(plan.channels), i32(height), i32(width), i32(plan.channels_last),
                 f32(plan.threshold), label_map, flag if flag is not None else null),
            )
        elif flag is not None:  # plan.scores is contiguous (``plan``)
            module.get_function("flag_nonfinite")((256,), (256,), (plan.scores, np.int64(plan.scores.size), flag))
        source, step, order = image if image is not None else (None, 0, "RGB")
        red, green, blue = SOURCE_CHANNELS[order]["RGB"]
        module.get_function("decode_publish")(
            grid_2d(out_h, out_w), BLOCK_2D,
            (plan.scores, label_map if label_map is not None else null, i32(plan.channels), i32(height), i32(width),
             i32(plan.channels_last), i32(row0), i32(col0), *plan.tables,
             plan.area_sequence if plan.area_sequence is not None else null, i32(out_h), i32(out_w),
             f32(plan.threshold), palette if palette is not None else null,
             source if source is not None else null, np.int64(step), i32(CHANNELS_PER_ORDER[order]),
             i32(red), i32(green), i32(blue), f32(1.0 - alpha), f32(alpha),
             labels, colours if colours is not None else null, overlay if overlay is not None else null),
        )

    def select(self, outputs: Mapping[str, Any]) -> tuple[str, Any]:
        """The name and tensor of the output the decoder reads (``decoder.output``, or the only one)."""
        name = self.decoder.output
        if name is None:
            if len(outputs) != 1:
                raise InferenceError(f"decoder.output is not set and the model has {len(outputs)} outputs")
            name = next(iter(outputs))
        if name not in outputs:
            raise InferenceError(f"model output '{name}' (decoder.output) not found; available: {', '.join(outputs)}")
        return name, outputs[name]

    def _class_indices(self, name: str, tensor: Any) -> Any:
        """In-graph argmax output ``[B,H,W]``/``[B,1,H,W]``/``[B,H,W,1]`` as checked labels."""
        cupy = self.cupy
        indices = single_channel_map(name, tensor)
        if not np.issubdtype(indices.dtype, np.integer):
            raise InferenceError(f"output '{name}' has dtype {indices.dtype}; the labels decoder expects class indices")
        dtype = label_dtype(self.decoder.num_classes)
        highest = np.iinfo(dtype).max if self.decoder.num_classes is None else self.decoder.num_classes - 1
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high > highest:
            raise InferenceError(f"output '{name}' holds class indices {low}..{high}, outside 0..{highest}")
        return cupy.ascontiguousarray(indices.astype(dtype))

    def _window_and_size(self, map_size: tuple[int, int], geometry: ResizeGeometry, at_source: bool) -> tuple[int, int, int, int, tuple[int, int]]:
        """Window ``(row0, col0, rows, cols)`` of the map to resample and the destination size,
        exactly as the CPU decoders choose them (``decoders.segmentation.output_window``)."""
        if at_source:
            rows, cols = geometry.content_window(map_size)
            return rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start, geometry.source_size
        return 0, 0, map_size[0], map_size[1], geometry.network_size

    def _resample_labels(self, labels: Any, geometry: ResizeGeometry, at_source: bool) -> Any:
        row0, col0, rows, cols, (out_h, out_w) = self._window_and_size(labels.shape, geometry, at_source)
        if (rows, cols) == (out_h, out_w):
            return self.cupy.ascontiguousarray(labels[row0 : row0 + rows, col0 : col0 + cols])
        tables = self._nearest_tables(rows, cols, (out_h, out_w))
        col_table, row_table = tables[0], tables[4]
        out = self.cupy.empty((out_h, out_w), labels.dtype)
        module = postprocess_module("float32", labels.dtype.name)
        module.get_function("gather_labels")(
            grid_2d(out_h, out_w), BLOCK_2D,
            (labels, np.int32(labels.shape[1]), np.int32(row0), np.int32(col0), row_table, col_table,
             np.int32(out_h), np.int32(out_w), out),
        )
        return out

    def _nearest_tables(self, rows: int, cols: int, output_size: tuple[int, int]) -> list[Any]:
        """``decode_publish``'s eight table arguments for nearest resampling (x0 and y0 are read)."""
        out_h, out_w = output_size
        key = ("nearest", rows, cols, out_h, out_w)
        if key not in self._tables:
            col_table = self.cupy.asarray(nearest_indices(cols, out_w, exact=True))
            row_table = self.cupy.asarray(nearest_indices(rows, out_h, exact=True))
            self._tables[key] = [col_table, col_table, col_table, col_table, row_table, row_table, row_table, row_table]
        return self._tables[key]

    def _linear_tables(self, rows: int, cols: int, output_size: tuple[int, int]) -> list[Any]:
        """``decode_publish``'s eight table arguments for the bilinear upsample (OpenCV's taps)."""
        out_h, out_w = output_size
        key = ("linear", rows, cols, out_h, out_w)
        if key not in self._tables:
            x = linear_taps(cols, out_w, clamp_to_edge=True)
            y = linear_taps(rows, out_h, clamp_to_edge=False)
            self._tables[key] = [
                self.cupy.asarray(t) for t in (x.index0, x.index1, x.weight0, x.weight1, y.index0, y.index1, y.weight0, y.weight1)
            ]
        return self._tables[key]

    def _area_sequence(self, channels: int, out_w: int) -> Any:
        """``DecodePlan.area_sequence`` on the device (made once per size)."""
        key = ("area", channels, out_w)
        if key not in self._tables:
            self._tables[key] = [self.cupy.asarray(area_sequence_table(channels, out_w))]
        return self._tables[key][0]


def area_sequence_table(channels: int, out_w: int) -> npt.NDArray[np.uint8]:
    """``channels x out_w`` (C order, as the kernel reads it): 1 where OpenCV's 2x area shortcut sums
    a channel's four scores in sequence at that output column, for the channel groups the CPU
    decoders resize together (``resize_channel_groups``)."""
    table = np.empty((channels, out_w), np.uint8)
    for group in resize_channel_groups(channels):
        table[group] = area_shortcut_sums_in_sequence(group.stop - group.start, out_w)
    return table
