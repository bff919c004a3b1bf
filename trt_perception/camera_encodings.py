"""Camera encodings that need a colour conversion: YUV 4:2:2, NV21/NV12 and Bayer mosaics.

Many USB and GMSL cameras publish ``sensor_msgs/Image`` in these ``image_encodings`` forms. Each is
turned into BGR pixels (8 or 16 bit, as the source) by one OpenCV conversion that reads the
message's own buffer through a strided view: no copy is made before the conversion itself.

Layouts (``step`` is the byte length of one row, padding allowed):

- ``yuv422`` / ``uyvy``: U Y0 V Y1 per pixel pair; ``yuv422_yuy2`` / ``yuyv``: Y0 U Y1 V. 2 bytes
  per pixel, even width.
- ``nv21`` / ``nv12``: ``height`` rows of Y, then ``height / 2`` rows of interleaved V U (nv21) or
  U V (nv12) at half resolution; even width and height; data is ``step * height * 3 / 2`` bytes.
- ``bayer_<pattern>8`` / ``bayer_<pattern>16``: one sample per pixel; ``<pattern>`` names the
  colours of the top-left 2x2 cell row by row (``rggb``: red at (0, 0), blue at (1, 1)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.errors import ImageDecodeError


@dataclass(frozen=True)
class CameraEncoding:
    """How one converted encoding is stored and which OpenCV conversion makes BGR of it."""

    kind: str  # "packed_yuv" | "semi_planar_yuv" | "bayer"
    cv2_code: int
    bytes_per_sample: int = 1


# OpenCV names Bayer conversions after the second row's second and third samples, so the pattern
# of the top-left cell maps to the "opposite" code (the same table cv_bridge uses).
CAMERA_ENCODINGS: dict[str, CameraEncoding] = {
    "yuv422": CameraEncoding("packed_yuv", cv2.COLOR_YUV2BGR_UYVY),
    "uyvy": CameraEncoding("packed_yuv", cv2.COLOR_YUV2BGR_UYVY),
    "yuv422_yuy2": CameraEncoding("packed_yuv", cv2.COLOR_YUV2BGR_YUYV),
    "yuyv": CameraEncoding("packed_yuv", cv2.COLOR_YUV2BGR_YUYV),
    "nv21": CameraEncoding("semi_planar_yuv", cv2.COLOR_YUV2BGR_NV21),
    "nv12": CameraEncoding("semi_planar_yuv", cv2.COLOR_YUV2BGR_NV12),
    "bayer_rggb8": CameraEncoding("bayer", cv2.COLOR_BayerBG2BGR),
    "bayer_bggr8": CameraEncoding("bayer", cv2.COLOR_BayerRG2BGR),
    "bayer_gbrg8": CameraEncoding("bayer", cv2.COLOR_BayerGR2BGR),
    "bayer_grbg8": CameraEncoding("bayer", cv2.COLOR_BayerGB2BGR),
    "bayer_rggb16": CameraEncoding("bayer", cv2.COLOR_BayerBG2BGR, 2),
    "bayer_bggr16": CameraEncoding("bayer", cv2.COLOR_BayerRG2BGR, 2),
    "bayer_gbrg16": CameraEncoding("bayer", cv2.COLOR_BayerGR2BGR, 2),
    "bayer_grbg16": CameraEncoding("bayer", cv2.COLOR_BayerGB2BGR, 2),
}


def _check_size(
    encoding: str, buffer: npt.NDArray[np.uint8], rows: int, row_bytes: int, step: int
) -> None:
    """Raise ImageDecodeError unless ``buffer`` holds exactly ``rows`` rows of ``step`` bytes."""
    if step < row_bytes:
        raise ImageDecodeError(
            f"{encoding} image step {step} is shorter than one row ({row_bytes} bytes)"
        )
    expected = step * rows
    if buffer.size != expected:
        problem = "truncated" if buffer.size < expected else "longer than expected"
        raise ImageDecodeError(
            f"{encoding} image data {problem}: {buffer.size} bytes, step {step} x {rows} rows "
            f"needs {expected}"
        )


def _rows(
    buffer: npt.NDArray[np.uint8], rows: int, columns: int, step: int, dtype: np.dtype[Any]
) -> npt.NDArray[Any]:
    """A rows x columns view of ``buffer`` with rows ``step`` bytes apart (no copy)."""
    return np.ndarray(
        shape=(rows, columns), dtype=dtype, buffer=buffer, strides=(step, dtype.itemsize)
    )


def convert_to_bgr(
    buffer: npt.NDArray[np.uint8],
    height: int,
    width: int,
    encoding: str,
    step: int,
    is_bigendian: bool,
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """BGR pixels (HxWx3, uint8, or native uint16 for 16-bit Bayer) of a converted encoding.

    ``buffer`` is the message's flat uint8 data. Raises ImageDecodeError for an odd width or
    height where the encoding subsamples, a short ``step`` or a data length that does not fit.
    """
    layout = CAMERA_ENCODINGS[encoding]
    if layout.kind in ("packed_yuv", "semi_planar_yuv") and width % 2:
        raise ImageDecodeError(f"{encoding} image width must be even, got {width}")
    source: npt.NDArray
    if layout.kind == "packed_yuv":
        _check_size(encoding, buffer, height, width * 2, step)
        source = _rows(buffer, height, width * 2, step, np.dtype(np.uint8)).reshape(
            height, width, 2
        )
    elif layout.kind == "semi_planar_yuv":
        if height % 2:
            raise ImageDecodeError(f"{encoding} image height must be even, got {height}")
        _check_size(encoding, buffer, height * 3 // 2, width, step)
        source = _rows(buffer, height * 3 // 2, width, step, np.dtype(np.uint8))
    else:
        if height < 2 or width < 2:
            raise ImageDecodeError(f"{encoding} image must be at least 2x2, got {width}x{height}")
        sample: np.dtype = np.dtype(np.uint8)
        if layout.bytes_per_sample == 2:
            sample = np.dtype(">u2" if is_bigendian else "<u2")
        _check_size(encoding, buffer, height, width * sample.itemsize, step)
        source = _rows(buffer, height, width, step, sample)
        if not sample.isnative:
            source = source.astype(sample.newbyteorder("="))
    return np.asarray(cv2.cvtColor(source, layout.cv2_code))
