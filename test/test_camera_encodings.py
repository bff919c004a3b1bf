"""YUV 4:2:2, NV21/NV12 and Bayer camera encodings on real images.

Each encoded image is packed by hand (``camera_encoding_samples``) from a real photo. Two
references: OpenCV's own conversion of a compact copy of the same bytes (the decoder must equal it
exactly, also with row padding), and the original photo (the decoded colours must be close to it,
and clearly closer than with any other layout's reading — which catches a swapped U/V or a Bayer
pattern read as another).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from camera_encoding_samples import (
    BAYER_ENCODINGS,
    YUV_ENCODINGS,
    pack_bayer,
    pack_yuv,
    pad_rows,
)
from trt_perception.errors import ImageDecodeError
from trt_perception.image_decoding import decode_image

IMAGES = Path(__file__).parent / "fixtures" / "images"

OPENCV_CODES = {
    "yuv422": cv2.COLOR_YUV2BGR_UYVY,
    "uyvy": cv2.COLOR_YUV2BGR_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUYV,
    "yuyv": cv2.COLOR_YUV2BGR_YUYV,
    "nv21": cv2.COLOR_YUV2BGR_NV21,
    "nv12": cv2.COLOR_YUV2BGR_NV12,
    # cv_bridge's table: OpenCV names Bayer codes after the second row's 2nd and 3rd samples.
    "rggb": cv2.COLOR_BayerBG2BGR,
    "bggr": cv2.COLOR_BayerRG2BGR,
    "gbrg": cv2.COLOR_BayerGR2BGR,
    "grbg": cv2.COLOR_BayerGB2BGR,
}


@pytest.fixture(scope="module")
def photo_rgb() -> np.ndarray:
    bgr = cv2.imread(str(IMAGES / "astronaut.png"))
    assert bgr is not None
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[:240, :320])


def _decode(rows: np.ndarray, height: int, width: int, encoding: str, big_endian: bool = False) -> np.ndarray:
    decoded = decode_image(rows.tobytes(), height, width, encoding, rows.shape[1], big_endian)
    assert decoded.channel_order == "BGR"
    return decoded.pixels


def _mean_error(bgr: np.ndarray, rgb: np.ndarray) -> float:
    return float(np.abs(bgr[:, :, ::-1].astype(np.float64) - rgb.astype(np.float64)).mean())


@pytest.mark.parametrize("encoding", YUV_ENCODINGS)
def test_yuv_encodings_equal_opencv_and_restore_the_photo(photo_rgb: np.ndarray, encoding: str) -> None:
    height, width = photo_rgb.shape[:2]
    rows = pack_yuv(photo_rgb, encoding)
    decoded = _decode(pad_rows(rows, 24), height, width, encoding)
    source = rows.reshape(height, width, 2) if rows.shape[0] == height else rows
    np.testing.assert_array_equal(decoded, cv2.cvtColor(np.ascontiguousarray(source), OPENCV_CODES[encoding]))
    assert decoded.shape == (height, width, 3) and decoded.dtype == np.uint8
    error = _mean_error(decoded, photo_rgb)
    assert error < 4.0, f"{encoding}: mean error {error:.2f} against the photo"
    for other in YUV_ENCODINGS:
        same_layout = OPENCV_CODES[other] == OPENCV_CODES[encoding]
        if same_layout or pack_yuv(photo_rgb, other).shape != rows.shape:
            continue
        wrong = _decode(rows, height, width, other)
        assert _mean_error(wrong, photo_rgb) > 3 * error, f"{encoding} read as {other} looks as good"


BAYER_CASES = [(encoding, False) for encoding in BAYER_ENCODINGS] + [
    (encoding, True) for encoding in BAYER_ENCODINGS if encoding.endswith("16")
]


@pytest.mark.parametrize(("encoding", "big_endian"), BAYER_CASES)
def test_bayer_encodings_equal_opencv_and_restore_the_photo(
    photo_rgb: np.ndarray, encoding: str, big_endian: bool
) -> None:
    height, width = photo_rgb.shape[:2]
    pattern = encoding[len("bayer_") : len("bayer_") + 4]
    rows = pack_bayer(photo_rgb, encoding, big_endian)
    decoded = _decode(pad_rows(rows, 8), height, width, encoding, big_endian)
    wide = encoding.endswith("16")
    samples = rows.view(">u2" if big_endian else "<u2").astype(np.uint16) if wide else rows
    np.testing.assert_array_equal(decoded, cv2.cvtColor(np.ascontiguousarray(samples), OPENCV_CODES[pattern]))
    assert decoded.dtype == (np.uint16 if wide else np.uint8)
    as_bytes = (decoded // 257).astype(np.uint8) if wide else decoded
    error = _mean_error(as_bytes, photo_rgb)
    assert error < 8.0, f"{encoding}: mean error {error:.2f} against the photo"
    for other in ("rggb", "bggr", "gbrg", "grbg"):
        if other != pattern:
            wrong = _decode(rows, height, width, encoding.replace(pattern, other), big_endian)
            wrong8 = (wrong // 257).astype(np.uint8) if wide else wrong
            assert _mean_error(wrong8, photo_rgb) > 1.5 * error, f"{encoding} read as {other} looks as good"


@pytest.mark.parametrize(
    ("encoding", "height", "width", "step", "size", "problem"),
    [
        ("yuv422", 4, 5, 10, 40, "width must be even"),
        ("nv21", 3, 4, 4, 18, "height must be even"),
        ("nv12", 4, 4, 4, 23, "truncated: 23 bytes"),
        ("nv12", 4, 4, 4, 25, "longer than expected"),
        ("yuyv", 4, 4, 7, 28, "step 7 is shorter than one row"),
        ("bayer_rggb16", 4, 4, 8, 31, "truncated"),
        ("bayer_grbg8", 1, 4, 4, 4, "at least 2x2"),
        ("bayer_bggr8", 0, 4, 4, 0, "zero size"),
    ],
)
def test_malformed_camera_encodings_are_rejected_with_reason(
    encoding: str, height: int, width: int, step: int, size: int, problem: str
) -> None:
    with pytest.raises(ImageDecodeError, match=problem):
        decode_image(b"\x80" * size, height, width, encoding, step, False)
