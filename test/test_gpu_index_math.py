"""The GPU kernels' index math, checked on the CPU against OpenCV (no GPU or CuPy needed).

The kernels read their sample positions and weights from ``gpu.resize_tables`` and address the
raw image as ``data[y * step + x * channels + channel]``; here the same tables drive a numpy twin
of each kernel's arithmetic, whose result must equal OpenCV's bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from test_decoders_segmentation import opencv_without_ipp
from trt_perception.errors import ImageDecodeError
from trt_perception.gpu.preprocess import SOURCE_CHANNELS, raw_bytes
from trt_perception.gpu.resize_tables import area_shortcut_sums_in_sequence, linear_taps, nearest_indices
from trt_perception.preprocess import convert_color

IMAGES = Path(__file__).parent / "fixtures" / "images"


def linear_uint8_twin(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """What the preprocess kernel computes per pixel (11-bit taps, OpenCV's SIMD rounding)."""
    x = linear_taps(image.shape[1], width, clamp_to_edge=True)
    y = linear_taps(image.shape[0], height, clamp_to_edge=False)
    pixels = image.astype(np.int64).reshape(image.shape[0], image.shape[1], -1)
    a0, a1 = x.fixed0[None, :, None].astype(np.int64), x.fixed1[None, :, None].astype(np.int64)
    b0, b1 = y.fixed0[:, None, None].astype(np.int64), y.fixed1[:, None, None].astype(np.int64)
    h0 = pixels[y.index0][:, x.index0] * a0 + pixels[y.index0][:, x.index1] * a1
    h1 = pixels[y.index1][:, x.index0] * a0 + pixels[y.index1][:, x.index1] * a1
    value = (((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16)
    return np.clip((value + 2) >> 2, 0, 255).astype(np.uint8).reshape((height, width) + image.shape[2:])


def linear_float_twin(scores: np.ndarray, height: int, width: int) -> np.ndarray:
    """What the fused upsample kernel computes per class (float32, no fused multiply-add)."""
    x = linear_taps(scores.shape[1], width, clamp_to_edge=True)
    y = linear_taps(scores.shape[0], height, clamp_to_edge=False)
    a0, a1 = x.weight0[None, :, None], x.weight1[None, :, None]
    h0 = (scores[y.index0][:, x.index0] * a0).astype(np.float32) + (scores[y.index0][:, x.index1] * a1).astype(np.float32)
    h1 = (scores[y.index1][:, x.index0] * a0).astype(np.float32) + (scores[y.index1][:, x.index1] * a1).astype(np.float32)
    return (h0 * y.weight0[:, None, None]).astype(np.float32) + (h1 * y.weight1[:, None, None]).astype(np.float32)


@pytest.mark.parametrize(
    ("source", "target", "channels"),
    [((480, 640), (256, 256), 3), ((1080, 1920), (736, 1312), 3), ((720, 1280), (512, 512), 4),
     ((480, 640), (240, 320), 1), ((37, 101), (256, 256), 3), ((5, 7), (3, 2), 4), ((64, 48), (64, 48), 3)],
)
def test_uint8_bilinear_twin_equals_opencv(source: tuple[int, int], target: tuple[int, int], channels: int) -> None:
    rng = np.random.default_rng(sum(source) + sum(target))
    image = rng.integers(0, 256, source + (channels,), dtype=np.uint8)
    expected = cv2.resize(image, target[::-1], interpolation=cv2.INTER_LINEAR).reshape(target + (channels,))
    np.testing.assert_array_equal(linear_uint8_twin(image, *target), expected)


def test_uint8_bilinear_twin_equals_opencv_on_a_photo() -> None:
    image = cv2.imread(str(IMAGES / "astronaut.png"))
    for target in [(256, 256), (300, 533), (1080, 1080)]:
        expected = cv2.resize(image, target[::-1], interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(linear_uint8_twin(image, *target), expected)


@pytest.mark.parametrize(
    ("source", "target", "channels"),
    [((64, 64), (480, 640), 19), ((128, 96), (1080, 1920), 5), ((256, 256), (1080, 1920), 1),
     ((64, 64), (720, 1280), 3), ((96, 128), (480, 640), 4), ((256, 256), (100, 90), 1)],
)
def test_float_bilinear_twin_equals_opencv(source: tuple[int, int], target: tuple[int, int], channels: int) -> None:
    """The kernel's float arithmetic is OpenCV's own (the code the CPU decoders run, Intel IPP off:
    IPP takes 1, 3 and 4 channels and computes other bits)."""
    scores = np.random.default_rng(channels).standard_normal(source + (channels,)).astype(np.float32)
    with opencv_without_ipp():
        expected = cv2.resize(scores, target[::-1], interpolation=cv2.INTER_LINEAR).reshape(*target, channels)
    np.testing.assert_array_equal(linear_float_twin(scores, *target), expected)


def area_shortcut_twin(scores: np.ndarray, sequence: np.ndarray) -> np.ndarray:
    """What the fused upsample kernel computes for a map exactly twice the output's size: the four
    values summed in pairs, or where ``sequence`` says so in order, times 0.25."""
    f32 = np.float32
    s00, s01, s10, s11 = scores[0::2, 0::2], scores[0::2, 1::2], scores[1::2, 0::2], scores[1::2, 1::2]
    with np.errstate(over="ignore", invalid="ignore"):
        in_sequence = ((s00 + s01) + s10) + s11
        in_pairs = (s00 + s01) + (s10 + s11)
        return np.where(sequence[None, :, None], in_sequence, in_pairs) * f32(0.25)


MAGNITUDES = {
    "mixed": lambda rng, shape: rng.standard_normal(shape) * rng.choice([1.0, 1e-7], shape),
    "subnormal": lambda rng, shape: rng.integers(-3, 4, shape) * 2.0**-149,  # halving loses them
    "near_overflow": lambda rng, shape: rng.choice([3.0e38, 3.2e38, -3.1e38, 1.0], shape),  # pair sums overflow
}


@pytest.mark.parametrize("magnitude", list(MAGNITUDES))
@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 19])
@pytest.mark.parametrize("width", [1, 3, 7, 16, 33, 250])
def test_area_shortcut_twin_equals_opencv(channels: int, width: int, magnitude: str) -> None:
    """OpenCV resizes a map exactly twice the output's size with its area shortcut, whose sums round
    unlike the bilinear blend in some columns (which ones: read off OpenCV by the probe); the
    kernel's twin must give OpenCV's bits on random maps anyway, subnormal and overflowing sums too."""
    rng = np.random.default_rng(channels * 1000 + width)
    scores = MAGNITUDES[magnitude](rng, (2 * 9, 2 * width, channels)).astype(np.float32)
    sequence = area_shortcut_sums_in_sequence(channels, width)
    with opencv_without_ipp():
        expected = cv2.resize(scores if channels > 1 else scores[:, :, 0], (width, 9), interpolation=cv2.INTER_LINEAR)
    expected = expected.reshape(9, width, channels)
    np.testing.assert_array_equal(area_shortcut_twin(scores, sequence), expected)
    if channels in (2, 3, 5, 19):  # OpenCV's scalar loop: every column in sequence
        assert sequence.all()
        if magnitude == "mixed":  # and the blend would differ
            assert not np.array_equal(linear_float_twin(scores, 9, width), expected)


def test_linear_taps_follow_half_pixel_centres() -> None:
    taps = linear_taps(4, 8, clamp_to_edge=True)  # upscale x2: position (d + 0.5) / 2 - 0.5
    np.testing.assert_array_equal(taps.index0, [0, 0, 0, 1, 1, 2, 2, 3])
    np.testing.assert_allclose(taps.weight1, [0, 0.25, 0.75, 0.25, 0.75, 0.25, 0.75, 0])
    np.testing.assert_array_equal(taps.fixed0 + taps.fixed1, 2048)
    rows = linear_taps(4, 8, clamp_to_edge=False)  # rows keep the weight of the clipped neighbour
    assert rows.weight1[0] == pytest.approx(0.75) and rows.index0[0] == rows.index1[0] == 0


@pytest.mark.parametrize("exact", [False, True])
def test_nearest_tables_equal_opencv(exact: bool) -> None:
    rng = np.random.default_rng(7)
    flag = cv2.INTER_NEAREST_EXACT if exact else cv2.INTER_NEAREST
    for _ in range(40):
        (src_h, src_w), (dst_h, dst_w) = rng.integers(1, 300, 2), rng.integers(1, 2000, 2)
        labels = rng.integers(0, 255, (src_h, src_w), dtype=np.uint8)
        expected = cv2.resize(labels, (int(dst_w), int(dst_h)), interpolation=flag)
        got = labels[nearest_indices(int(src_h), int(dst_h), exact)][:, nearest_indices(int(src_w), int(dst_w), exact)]
        np.testing.assert_array_equal(got, expected)


def test_tables_reject_empty_lengths() -> None:
    with pytest.raises(ValueError, match="positive"):
        linear_taps(0, 4, clamp_to_edge=True)
    with pytest.raises(ValueError, match="positive"):
        nearest_indices(3, 0)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_raw_bytes_addressing_recovers_every_pixel(channels: int) -> None:
    rng = np.random.default_rng(channels)
    height, width, padding = 13, 21, 5
    buffer = rng.integers(0, 256, (height, width * channels + padding), dtype=np.uint8)
    image = buffer[:, : width * channels].reshape(height, width, channels)
    if channels == 1:
        image = image[:, :, 0]
    span, step = raw_bytes(image)
    assert step == width * channels + padding and span.size == (height - 1) * step + width * channels
    assert np.shares_memory(span, buffer)  # no copy of the message buffer
    y, x, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
    gathered = span[y * step + x * channels + c]  # the kernel's address of (y, x, c)
    np.testing.assert_array_equal(gathered.reshape(image.shape), image)


def test_raw_bytes_rejects_planar_views() -> None:
    planar = np.zeros((3, 8, 8), np.uint8).transpose(1, 2, 0)
    with pytest.raises(ImageDecodeError, match="interleaved"):
        raw_bytes(planar)


@pytest.mark.parametrize("order", ["RGB", "BGR", "RGBA", "BGRA", "MONO"])
@pytest.mark.parametrize("model_order", ["RGB", "BGR"])
def test_channel_tables_equal_opencv_colour_conversion(order: str, model_order: str) -> None:
    channels = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "MONO": 1}[order]
    image = np.random.default_rng(3).integers(0, 256, (6, 5, channels), dtype=np.uint8)
    pixels = image[:, :, 0] if order == "MONO" else image
    expected = convert_color(pixels, order, model_order)
    np.testing.assert_array_equal(image[:, :, list(SOURCE_CHANNELS[order][model_order])], expected)


def test_packed_detections_come_back_bit_for_bit() -> None:
    """One float64 Nx6 array carries float32 boxes/scores and int64 class ids without any change."""
    from trt_perception.gpu.detection import pack_detections, unpack_detections

    rng = np.random.default_rng(7)
    boxes = rng.standard_normal((50, 4)).astype(np.float32) * 1e3
    boxes[0] = [np.finfo(np.float32).max, np.finfo(np.float32).tiny, -0.0, np.float32(1e-45)]
    scores = rng.random(50).astype(np.float32)
    class_ids = rng.integers(0, 2**53, 50, dtype=np.int64)
    packed = pack_detections(boxes, scores, class_ids)
    assert packed.shape == (50, 6) and packed.dtype == np.float64
    unpacked = unpack_detections(packed)
    assert unpacked.boxes.tobytes() == boxes.tobytes()
    assert unpacked.scores.tobytes() == scores.tobytes()
    np.testing.assert_array_equal(unpacked.class_ids, class_ids)
    empty = unpack_detections(pack_detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)))
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)


def test_array_module_picks_cupy_only_for_cupy_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from trt_perception.gpu import array_module

    stand_in = types.ModuleType("cupy")
    device_array = type("ndarray", (), {"__module__": "cupy._core.core"})()
    assert array_module(np.zeros(3)) is np and array_module([1, 2]) is np
    monkeypatch.setitem(sys.modules, "cupy", stand_in)
    assert array_module(device_array) is stand_in and array_module(np.zeros(3)) is np
