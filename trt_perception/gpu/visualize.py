"""GPU twins of ``visualize.colorize`` and ``visualize.overlay`` for labels already on the device."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from trt_perception.gpu._cupy import require_cupy
from trt_perception.gpu.kernels import BLOCK_2D, grid_2d, postprocess_module
from trt_perception.gpu.preprocess import SOURCE_CHANNELS
from trt_perception.preprocess import CHANNELS_PER_ORDER
from trt_perception.visualize import full_palette


class DevicePalette:
    """A palette's lookup table for every label of a label dtype (``visualize.full_palette``), on the
    device; uploaded once per dtype."""

    def __init__(self, palette: npt.NDArray[np.uint8]) -> None:
        self.cupy = require_cupy()
        self.colours = np.asarray(palette, np.uint8)
        self._tables: dict[str, Any] = {}

    def table(self, label_dtype: np.dtype) -> Any:
        """The device table (cupy ``Nx3`` uint8) for labels of ``label_dtype``."""
        name = np.dtype(label_dtype).name
        if name not in self._tables:
            self._tables[name] = self.cupy.asarray(full_palette(self.colours, np.dtype(label_dtype)))
        return self._tables[name]


class GpuVisualizer:
    """Colour masks and overlays on the GPU; the palette table is uploaded once."""

    def __init__(self, palette: npt.NDArray[np.uint8]) -> None:
        self.cupy = require_cupy()
        self.palette = DevicePalette(palette)

    def colorize(self, labels: Any) -> Any:
        """``HxWx3`` RGB colours (cupy) of ``HxW`` labels (cupy uint8/uint16)."""
        return self._run(labels, None, 0, "RGB", 0.0)

    def overlay(self, labels: Any, image: Any, step: int, channel_order: str, alpha: float = 0.5) -> Any:
        """Labels' colours blended onto the source image (RGB out), as ``visualize.overlay`` does.

        ``image`` is the image as received on the device (e.g. ``GpuPreprocessor.upload``'s buffer),
        ``step`` bytes per row; labels must be at the image's size.
        """
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
        return self._run(labels, image, step, channel_order, alpha)

    def _run(self, labels: Any, image: Any, step: int, channel_order: str, alpha: float) -> Any:
        cupy = self.cupy
        dtype = labels.dtype.name
        height, width = labels.shape
        out = cupy.empty((height, width, 3), cupy.uint8)
        blend = image is not None
        red, green, blue = SOURCE_CHANNELS[channel_order]["RGB"]
        postprocess_module("float32", dtype).get_function("colorize_overlay")(
            grid_2d(height, width), BLOCK_2D,
            (cupy.ascontiguousarray(labels), np.int32(height), np.int32(width), self.palette.table(labels.dtype),
             image if blend else out, np.int64(step), np.int32(CHANNELS_PER_ORDER[channel_order]),
             np.int32(red), np.int32(green), np.int32(blue),
             np.float32(1.0 - alpha), np.float32(alpha), np.int32(blend), out),
        )
        return out
