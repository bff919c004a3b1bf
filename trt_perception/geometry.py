"""Where the source image lies inside the network input, and mapping between the two.

The preprocessor resizes the source image (``source_size``) to ``content_size`` and places it at
``offset`` inside a network input of ``network_size`` (stretch: content == network, offset 0;
letterbox: the rest is padding). Every size is ``(height, width)``; offsets are ``(top, left)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.gpu._cupy import array_module

Placement = Literal["centered", "top_left"]


def resize_map(
    array: npt.NDArray, size: tuple[int, int], interpolation: int, out: npt.NDArray | None = None
) -> npt.NDArray:
    """``cv2.resize(array, (width, height), interpolation=...)`` for ``size`` (height, width), always
    with OpenCV's own arithmetic; into ``out`` when given (its shape and dtype those of the result).

    Builds of OpenCV with Intel IPP (the x86 opencv-python wheels) hand float bilinear resizes of
    1, 3 and 4 channels to IPP, which rounds differently: about half the values of a real
    probability map differ (by up to 4e-6), nearly all of a standard-normal one (by up to 8e-5).
    OpenCV's own code is what MediaPipe's pipeline computes (its bundled OpenCV, checked bit for
    bit on x86) and what this package's GPU kernels compute, so IPP is switched off around the call
    (a per-thread OpenCV setting, restored afterwards). On aarch64 OpenCV's own code fuses the
    multiply-add of its vertical pass, so its values may differ from x86's in the last bit.

    The preprocessor's resizes of uint8 images keep OpenCV's default: nearest, linear and area give
    IPP's bits there too, and bicubic, which differs by a level in a few percent of the pixels, is
    then what a model's authors get from opencv-python on the same machine (and five times faster
    at 1080p than OpenCV's own).
    """
    height, width = size
    previous = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        return cv2.resize(array, (width, height), dst=out, interpolation=interpolation)
    finally:
        cv2.ipp.setUseIPP(previous)


def sampling_grid(source_length: int, destination_length: int, sampling: str) -> tuple[float, float]:
    """``(step, offset)``: destination index ``d`` samples source position ``d * step + offset`` (pixels).

    ``half_pixel``: ``(d + 0.5) * src / dst - 0.5`` (OpenCV ``cv2.resize``); ``align_corners``:
    ``d * (src - 1) / (dst - 1)`` (TF1 ``align_corners=True``); ``asymmetric``: ``d * src / dst``
    (MediaPipe's ImageToTensor, TF1's default).
    """
    scale = source_length / destination_length
    if sampling == "align_corners":
        return ((source_length - 1) / (destination_length - 1) if destination_length > 1 else 0.0), 0.0
    if sampling == "asymmetric":
        return scale, 0.0
    return scale, 0.5 * scale - 0.5


@dataclass(frozen=True)
class ResizeGeometry:
    """The resize of one source image into the network input."""

    source_size: tuple[int, int]
    network_size: tuple[int, int]
    content_size: tuple[int, int]
    offset: tuple[int, int] = (0, 0)

    @classmethod
    def stretch(cls, source_size: tuple[int, int], network_size: tuple[int, int]) -> ResizeGeometry:
        """Source stretched to fill the whole network input."""
        return cls(source_size, network_size, network_size, (0, 0))

    @classmethod
    def letterbox(
        cls,
        source_size: tuple[int, int],
        network_size: tuple[int, int],
        placement: Placement = "centered",
    ) -> ResizeGeometry:
        """Source scaled with its aspect ratio kept to fit the network input, rest padded."""
        (src_h, src_w), (net_h, net_w) = source_size, network_size
        scale = min(net_h / src_h, net_w / src_w)
        content = (min(net_h, max(1, round(src_h * scale))), min(net_w, max(1, round(src_w * scale))))
        if placement == "centered":
            offset = ((net_h - content[0]) // 2, (net_w - content[1]) // 2)
        else:
            offset = (0, 0)
        return cls(source_size, network_size, content, offset)

    @property
    def scale(self) -> tuple[float, float]:
        """Network pixels per source pixel as ``(sy, sx)``."""
        return (
            self.content_size[0] / self.source_size[0],
            self.content_size[1] / self.source_size[1],
        )

    def boxes_to_source(self, boxes: npt.ArrayLike, clip: bool = True) -> npt.NDArray[np.float32]:
        """Map ``xyxy`` boxes from network-input pixels to source pixels (clipped to the image).

        CuPy boxes are mapped on the device (same float64 arithmetic, same results)."""
        xp = array_module(boxes)
        out = xp.array(boxes, dtype=xp.float64).reshape(-1, 4)
        sy, sx = self.scale
        top, left = self.offset
        out[:, 0::2] = (out[:, 0::2] - left) / sx
        out[:, 1::2] = (out[:, 1::2] - top) / sy
        if clip:
            self._clip_to_source(out, xp)
        return out.astype(xp.float32)

    def clip_to_source(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``xyxy`` source-pixel boxes clipped to the image (as ``boxes_to_source`` clips)."""
        out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        return self._clip_to_source(out, np).astype(np.float32)

    def _clip_to_source(self, out: Any, xp: Any) -> Any:
        xp.clip(out[:, 0::2], 0, self.source_size[1], out=out[:, 0::2])
        xp.clip(out[:, 1::2], 0, self.source_size[0], out=out[:, 1::2])
        return out

    def boxes_to_network(self, boxes: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map ``xyxy`` boxes from source pixels to network-input pixels."""
        out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        sy, sx = self.scale
        top, left = self.offset
        out[:, 0::2] = out[:, 0::2] * sx + left
        out[:, 1::2] = out[:, 1::2] * sy + top
        return out

    def content_window(self, map_size: tuple[int, int]) -> tuple[slice, slice]:
        """Rows and columns of a map covering the network input (any resolution) that hold the image."""
        fy = map_size[0] / self.network_size[0]
        fx = map_size[1] / self.network_size[1]
        top, left = self.offset
        rows = slice(round(top * fy), max(round(top * fy) + 1, round((top + self.content_size[0]) * fy)))
        cols = slice(round(left * fx), max(round(left * fx) + 1, round((left + self.content_size[1]) * fx)))
        return rows, cols
