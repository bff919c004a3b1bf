"""GPU twin of ``trt_perception.preprocess.Preprocessor``: raw image bytes to the network input.

The image is uploaded once as received (rows ``step`` bytes apart, any of RGB/BGR/RGBA/BGRA/MONO)
and one kernel resizes it (OpenCV's INTER_LINEAR or INTER_NEAREST arithmetic, bit for bit),
letterboxes it, picks the model's colour order, normalizes and writes NCHW/NHWC float32, float16 or
uint8 straight into a device buffer, e.g. the one a TensorRT backend binds as its input.
Per-image standardization adds a reduction and an in-place pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from trt_perception.errors import ImageDecodeError
from trt_perception.geometry import ResizeGeometry
from trt_perception.gpu._cupy import require_cupy
from trt_perception.gpu.kernels import BLOCK_2D, grid_2d, preprocess_module
from trt_perception.gpu.resize_tables import linear_taps, nearest_indices
from trt_perception.preprocess import CHANNELS_PER_ORDER, Preprocessor, affine_normalization, cpu_only_input_options
from trt_perception.spec import InputSpec

# Model channel k (in the model's colour order) is source channel SOURCE_CHANNELS[order][model][k].
SOURCE_CHANNELS = {
    "RGB": {"RGB": (0, 1, 2), "BGR": (2, 1, 0)},
    "BGR": {"RGB": (2, 1, 0), "BGR": (0, 1, 2)},
    "RGBA": {"RGB": (0, 1, 2), "BGR": (2, 1, 0)},
    "BGRA": {"RGB": (2, 1, 0), "BGR": (0, 1, 2)},
    "MONO": {"RGB": (0, 0, 0), "BGR": (0, 0, 0)},
}


def raw_bytes(pixels: npt.NDArray) -> tuple[npt.NDArray[np.uint8], int]:
    """The bytes spanned by an ``HxWxC`` (or ``HxW``) uint8 image whose rows may be padded, as one
    contiguous 1-D view (no copy), and the row ``step`` in bytes."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    row_step, pixel_step = pixels.strides[:2]
    channel_step = 1 if pixels.ndim == 2 else pixels.strides[2]
    if (channels > 1 and channel_step != 1) or pixel_step != channels or row_step < width * channels:
        raise ImageDecodeError(
            f"GPU preprocessing needs interleaved rows (strides (step, {channels}, 1)), got strides {pixels.strides}"
        )
    span = (height - 1) * row_step + width * channels
    return np.lib.stride_tricks.as_strided(pixels, shape=(span,), strides=(1,)), row_step


class GpuPreprocessor:
    """Source images (host numpy views) to network input tensors on the GPU, for one model input.

    Same spec, same geometry and same values as the CPU ``Preprocessor`` (normalized values equal
    to float32 rounding; the resize is OpenCV's fixed-point arithmetic). Only 8-bit images are
    supported here. Spec options only the CPU preprocessor implements (``cpu_only_input_options``:
    interpolations other than linear and nearest, sampling grids other than half_pixel,
    ``post_affine``, non-default standardization statistics) are served by the CPU preprocessor and
    an upload of its tensor (same values; ``run_on_device`` refuses them).
    """

    def __init__(self, spec: InputSpec) -> None:
        # A spec option the kernel lacks: the CPU preprocessor makes the tensor, which is uploaded.
        self.host_fallback = cpu_only_input_options(spec)
        self.cupy = require_cupy()
        self.spec = spec
        self._reference = Preprocessor(spec)  # geometry rules and image checks shared with the CPU path
        self._per_image = spec.normalization.type == "per_image_standardization"
        self._scale: npt.NDArray[np.float32]
        self._offset: npt.NDArray[np.float32]
        if self._per_image:  # raw values first; the standardization pass normalizes in place
            self._scale, self._offset = np.ones(3, np.float32), np.zeros(3, np.float32)
        else:
            self._scale, self._offset = affine_normalization(spec.normalization)
        self._module = preprocess_module(spec.dtype, spec.layout == "NHWC", spec.interpolation == "nearest")
        self._kernel = self._module.get_function("preprocess")
        self._upload: Any = None
        self.last_upload: tuple[Any, int] = (None, 0)  # (device bytes, step) of the last uploaded image
        self._output: Any = None
        self._tables: dict[tuple[tuple[int, int], tuple[int, int]], Any] = {}
        self._sums = self.cupy.zeros(2, self.cupy.float64) if self._per_image else None

    def input_shape(self, network_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """Shape of the network input tensor for a network size ``(height, width)``."""
        height, width = network_size
        return (1, 3, height, width) if self.spec.layout == "NCHW" else (1, height, width, 3)

    def geometry(self, source_size: tuple[int, int]) -> ResizeGeometry:
        """Where an image of ``source_size`` lands in the network input (the CPU path's rule)."""
        return self._reference.geometry(source_size)

    def check(self, pixels: npt.NDArray, channel_order: str) -> ResizeGeometry:
        """Reject what the CPU path rejects and images other than 8-bit; the image's geometry."""
        self._reference.check_image(pixels, channel_order)  # the CPU path's validation
        if pixels.dtype != np.uint8:
            raise ImageDecodeError(f"the GPU preprocessor takes 8-bit images, got {pixels.dtype}; use the CPU path")
        return self.geometry((pixels.shape[0], pixels.shape[1]))

    def upload(self, pixels: npt.NDArray) -> tuple[Any, int]:
        """Copy the image's bytes as received (row padding included) into a reused device buffer."""
        span, step = raw_bytes(pixels)
        if self._upload is None or self._upload.size < span.size:
            self._upload = self.cupy.empty(span.size, self.cupy.uint8)
        device = self._upload[: span.size]
        device.set(span)
        self.last_upload = (device, step)
        return device, step

    def __call__(
        self, pixels: npt.NDArray, channel_order: str, out: Any = None
    ) -> tuple[Any, ResizeGeometry]:
        """Network input (a cupy array of batch 1) for ``pixels``; written into ``out`` when given
        (a C-contiguous cupy array of the input shape and dtype), else into a reused buffer."""
        geometry = self.check(pixels, channel_order)
        device, step = self.upload(pixels)
        if self.host_fallback:
            tensor, geometry = self._reference(pixels, channel_order)
            out = self._output_buffer(tensor.shape, out)
            out.set(tensor)
            return out, geometry
        return self.run_on_device(device, step, geometry, channel_order, out), geometry

    def run_on_device(
        self, image: Any, step: int, geometry: ResizeGeometry, channel_order: str, out: Any = None
    ) -> Any:
        """Preprocess an image already on the device (``step`` bytes per row) for ``geometry``."""
        if self.host_fallback:
            raise ValueError(f"{self.host_fallback}: not implemented by the GPU kernel; pass host images")
        shape = self.input_shape(geometry.network_size)
        out = self._output_buffer(shape, out)
        x0, x1, a0, a1, y0, y1, b0, b1 = self._tables_for(geometry)
        (net_h, net_w), (top, left), (content_h, content_w) = geometry.network_size, geometry.offset, geometry.content_size
        pad = np.asarray(self.spec.pad_value, np.float32) * self._scale + self._offset
        scale, offset = self._scale, self._offset
        channels = SOURCE_CHANNELS[channel_order][self.spec.color_order]
        f32 = np.float32
        self._kernel(
            grid_2d(net_h, net_w),
            BLOCK_2D,
            (
                image, np.int64(step), np.int32(CHANNELS_PER_ORDER[channel_order]),
                *(np.int32(c) for c in channels),
                x0, x1, a0, a1, y0, y1, b0, b1,
                np.int32(net_h), np.int32(net_w), np.int32(top), np.int32(left),
                np.int32(content_h), np.int32(content_w),
                *(f32(v) for v in scale), *(f32(v) for v in offset), *(f32(v) for v in pad),
                out,
            ),
        )
        if self._per_image:
            self._standardize(out, geometry)
        return out

    def _output_buffer(self, shape: tuple[int, ...], out: Any) -> Any:
        dtype = np.dtype(self.spec.dtype)
        if out is not None:
            if tuple(out.shape) != shape or out.dtype != dtype or not out.flags.c_contiguous:
                raise ValueError(
                    f"output buffer must be a C-contiguous {dtype} array of shape {shape}, "
                    f"got {out.dtype} {tuple(out.shape)}"
                )
            return out
        if self._output is None or tuple(self._output.shape) != shape:
            self._output = self.cupy.empty(shape, dtype)
        return self._output

    def _tables_for(self, geometry: ResizeGeometry) -> list[Any]:
        key = (geometry.source_size, geometry.content_size)
        if key not in self._tables:
            (src_h, src_w), (dst_h, dst_w) = geometry.source_size, geometry.content_size
            if self.spec.interpolation == "nearest":
                cols, rows = nearest_indices(src_w, dst_w), nearest_indices(src_h, dst_h)
                zero_x, zero_y = np.zeros(dst_w, np.int32), np.zeros(dst_h, np.int32)
                host = [cols, cols, zero_x, zero_x, rows, rows, zero_y, zero_y]
            else:
                x, y = linear_taps(src_w, dst_w, clamp_to_edge=True), linear_taps(src_h, dst_h, clamp_to_edge=False)
                host = [x.index0, x.index1, x.fixed0, x.fixed1, y.index0, y.index1, y.fixed0, y.fixed1]
            self._tables[key] = [self.cupy.asarray(np.ascontiguousarray(t, np.int32)) for t in host]
        return self._tables[key]

    def _standardize(self, out: Any, geometry: ResizeGeometry) -> None:
        """Second and third pass of per-image standardization (statistics over the content only)."""
        assert self._sums is not None
        self._sums.fill(0)
        (net_h, net_w), (top, left), (content_h, content_w) = geometry.network_size, geometry.offset, geometry.content_size
        i32 = np.int32
        self._module.get_function("content_sums")(
            (256,), (256,),
            (out, i32(net_h), i32(net_w), i32(top), i32(left), i32(content_h), i32(content_w), self._sums),
        )
        total = out.size
        self._module.get_function("standardize")(
            ((total + 255) // 256,), (256,),
            (out, np.int64(total), np.int64(content_h * content_w * 3), self._sums),
        )
