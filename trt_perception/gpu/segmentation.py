"""GPU twins of the segmentation decoders: labels computed where the scores already are.

``GpuSegmentationDecoder`` wraps a CPU decoder (``LogitsDecoder``, ``BinaryDecoder`` or
``LabelsDecoder`` from ``create_decoder``) and reads its parameters, so both paths are configured by
the same spec. Outputs are cupy arrays; labels stay on the device until the caller fetches them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from trt_perception.decoders.segmentation import (
    BinaryDecoder,
    LabelsDecoder,
    LogitsDecoder,
    SegmentationDecoder,
    label_dtype,
)
from trt_perception.decoders.tensors import require_rank, single_channel_map
from trt_perception.errors import InferenceError
from trt_perception.geometry import ResizeGeometry
from trt_perception.gpu._cupy import require_cupy
from trt_perception.gpu.kernels import BLOCK_2D, grid_2d, postprocess_module
from trt_perception.gpu.resize_tables import linear_taps, nearest_indices

class GpuSegmentationDecoder:
    """Labels on the GPU for the same spec and outputs as ``decoder`` produces on the CPU."""

    def __init__(self, decoder: SegmentationDecoder) -> None:
        if not isinstance(decoder, (LogitsDecoder, BinaryDecoder, LabelsDecoder)):
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
        name, tensor = self._select(outputs)
        decoder = self.decoder
        if isinstance(decoder, LabelsDecoder):
            return self._resample_labels(self._class_indices(name, tensor), geometry, at_source)
        if check_finite:
            self._check_finite(name, tensor)
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
            before = decoder.upsample == "before_argmax"
            threshold = 0.0
        else:
            scores = self.cupy.ascontiguousarray(single_channel_map(name, tensor))
            channels_last, channels, dtype = False, 1, np.uint8
            (height, width) = scores.shape
            before = decoder.upsample == "before_threshold"
            threshold = decoder.threshold_cut
        if scores.dtype not in (np.float32, np.float16):
            scores = scores.astype(np.float32)
        module = postprocess_module(str(scores.dtype), np.dtype(dtype).name)
        if before:
            return self._upsample_decide(module, scores, channels, (height, width), channels_last, threshold, dtype, geometry, at_source)
        labels = self.cupy.empty((height, width), dtype)
        plane = height * width
        module.get_function("decide_labels")(
            ((plane + 255) // 256,), (256,),
            (scores, np.int32(channels), np.int32(height), np.int32(width), np.int32(channels_last),
             np.float32(threshold), labels),
        )
        return self._resample_labels(labels, geometry, at_source)

    def _select(self, outputs: Mapping[str, Any]) -> tuple[str, Any]:
        name = self.decoder.output
        if name is None:
            if len(outputs) != 1:
                raise InferenceError(f"decoder.output is not set and the model has {len(outputs)} outputs")
            name = next(iter(outputs))
        if name not in outputs:
            raise InferenceError(f"model output '{name}' (decoder.output) not found; available: {', '.join(outputs)}")
        return name, outputs[name]

    def _check_finite(self, name: str, tensor: Any) -> None:
        self._flag.fill(0)
        module = postprocess_module(str(tensor.dtype), "uint8")
        data = self.cupy.ascontiguousarray(tensor)
        module.get_function("flag_nonfinite")((256,), (256,), (data, np.int64(data.size), self._flag))
        if int(self._flag[0]):
            raise InferenceError(f"output '{name}' contains NaN or infinite values")

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
        exactly as ``geometry.map_to_source`` / the CPU decoders choose them."""
        if at_source:
            rows, cols = geometry.content_window(map_size)
            return rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start, geometry.source_size
        return 0, 0, map_size[0], map_size[1], geometry.network_size

    def _resample_labels(self, labels: Any, geometry: ResizeGeometry, at_source: bool) -> Any:
        row0, col0, rows, cols, (out_h, out_w) = self._window_and_size(labels.shape, geometry, at_source)
        if (rows, cols) == (out_h, out_w):
            return self.cupy.ascontiguousarray(labels[row0 : row0 + rows, col0 : col0 + cols])
        key = ("nearest", rows, cols, out_h, out_w)
        if key not in self._tables:
            self._tables[key] = [
                self.cupy.asarray(nearest_indices(rows, out_h, exact=True)),
                self.cupy.asarray(nearest_indices(cols, out_w, exact=True)),
            ]
        row_table, col_table = self._tables[key]
        out = self.cupy.empty((out_h, out_w), labels.dtype)
        module = postprocess_module("float32", labels.dtype.name)
        module.get_function("gather_labels")(
            grid_2d(out_h, out_w), BLOCK_2D,
            (labels, np.int32(labels.shape[1]), np.int32(row0), np.int32(col0), row_table, col_table,
             np.int32(out_h), np.int32(out_w), out),
        )
        return out

    def _upsample_decide(
        self, module: Any, scores: Any, channels: int, map_size: tuple[int, int], channels_last: bool,
        threshold: float, dtype: Any, geometry: ResizeGeometry, at_source: bool,
    ) -> Any:
        height, width = map_size
        row0, col0, rows, cols, (out_h, out_w) = self._window_and_size(map_size, geometry, at_source)
        key = ("linear", rows, cols, out_h, out_w)
        if key not in self._tables:
            x = linear_taps(cols, out_w, clamp_to_edge=True)
            y = linear_taps(rows, out_h, clamp_to_edge=False)
            self._tables[key] = [
                self.cupy.asarray(t) for t in (x.index0, x.index1, x.weight0, x.weight1, y.index0, y.index1, y.weight0, y.weight1)
            ]
        labels = self.cupy.empty((out_h, out_w), dtype)
        i32 = np.int32
        module.get_function("upsample_decide_labels")(
            grid_2d(out_h, out_w), BLOCK_2D,
            (scores, i32(channels), i32(height), i32(width), i32(channels_last), i32(row0), i32(col0),
             *self._tables[key], i32(out_h), i32(out_w), np.float32(threshold), labels),
        )
        return labels
