"""Camera-encoded images made by hand from an RGB picture, for the encoding tests.

The packing follows the documented layouts (ITU-R BT.601 limited-range YUV, as V4L2 and OpenCV
use for these formats; Bayer samples taken from the colour the pattern names) and is written here
with numpy alone, independently of ``trt_perception.camera_encodings``.
"""

from __future__ import annotations

import numpy as np

YUV_ENCODINGS = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv", "nv21", "nv12")
BAYER_PATTERNS = ("rggb", "bggr", "gbrg", "grbg")
BAYER_ENCODINGS = tuple(f"bayer_{p}{bits}" for bits in (8, 16) for p in BAYER_PATTERNS)


def bt601_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-resolution Y, U, V planes (float) of an RGB uint8 image, BT.601 limited range."""
    r, g, b = (rgb[:, :, i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return y, u, v


def _byte(plane: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(plane), 0, 255).astype(np.uint8)


def pack_yuv(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """Rows of a YUV-encoded image (uint8, height x row bytes, unpadded) of an even-sized RGB image."""
    height, width = rgb.shape[:2]
    y, u, v = bt601_yuv(rgb)
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        u2 = _byte((u[:, 0::2] + u[:, 1::2]) / 2)
        v2 = _byte((v[:, 0::2] + v[:, 1::2]) / 2)
        y8 = _byte(y)
        packed = np.empty((height, width // 2, 4), np.uint8)
        if encoding in ("yuv422", "uyvy"):  # U Y0 V Y1
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = u2, y8[:, 0::2], v2, y8[:, 1::2]
        else:  # Y0 U Y1 V
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y8[:, 0::2], u2, y8[:, 1::2], v2
        return packed.reshape(height, width * 2)
    quarter = lambda plane: (plane[0::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 0::2] + plane[1::2, 1::2]) / 4  # noqa: E731
    u4, v4 = _byte(quarter(u)), _byte(quarter(v))
    chroma = np.empty((height // 2, width // 2, 2), np.uint8)
    first, second = (v4, u4) if encoding == "nv21" else (u4, v4)
    chroma[..., 0], chroma[..., 1] = first, second
    return np.concatenate([_byte(y), chroma.reshape(height // 2, width)])


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """One sample per pixel: the channel the pattern names at that position of the 2x2 cell."""
    channel = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], rgb.dtype)
    for index, colour in enumerate(pattern):
        row, column = divmod(index, 2)
        out[row::2, column::2] = rgb[row::2, column::2, channel[colour]]
    return out


def pack_bayer(rgb: np.ndarray, encoding: str, big_endian: bool = False) -> np.ndarray:
    """Rows of a Bayer-encoded image (uint8, height x row bytes); 16-bit samples are value x 257."""
    pattern, bits = encoding[len("bayer_") : len("bayer_") + 4], encoding[len("bayer_") + 4 :]
    samples = mosaic(rgb, pattern)
    if bits == "8":
        return samples
    wide = samples.astype(">u2" if big_endian else "<u2") * 257
    return wide.view(np.uint8).reshape(samples.shape[0], -1)


def pad_rows(rows: np.ndarray, extra: int) -> np.ndarray:
    """The same rows with ``extra`` padding bytes at the end of each (a larger ``step``)."""
    padded = np.full((rows.shape[0], rows.shape[1] + extra), 0xAB, np.uint8)
    padded[:, : rows.shape[1]] = rows
    return padded
