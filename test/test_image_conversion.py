"""sensor_msgs/Image and CompressedImage objects <-> numpy on real images (needs rclpy)."""

from __future__ import annotations

import array
import platform
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from trt_perception.errors import ImageDecodeError
from trt_perception.image_decoding import encode_image
from trt_perception.ros.cdr import MessageHeader, parse_image, serialize_image
from trt_perception.ros.image_conversion import (
    compressed_image_from_msg,
    header_msg,
    image_from_msg,
    image_to_msg,
    message_header,
    tune_malloc_for_large_messages,
)

IMAGES = Path(__file__).parent / "fixtures" / "images"


def _camera_header() -> Header:
    header = Header(frame_id="front_camera_optical")
    header.stamp.sec = 1_732_000_000
    header.stamp.nanosec = 250_000_001
    return header


def _padded_msg(
    rows: np.ndarray, width: int, encoding: str, padding: int, is_bigendian: bool
) -> Image:
    """An Image whose rows are ``rows`` (HxN bytes) each followed by ``padding`` bytes."""
    height, row_bytes = rows.shape
    padded = np.full((height, row_bytes + padding), 0x5A, np.uint8)
    padded[:, :row_bytes] = rows
    return Image(
        header=_camera_header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(is_bigendian),
        step=row_bytes + padding,
        data=array.array("B", padded.tobytes()),
    )


@pytest.mark.parametrize("padding", [0, 7])
def test_rgb8_message_is_viewed_in_place(padding: int) -> None:
    bgr = cv2.imread(str(IMAGES / "motorcycle_left.png"), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    msg = _padded_msg(rgb.reshape(rgb.shape[0], -1), rgb.shape[1], "rgb8", padding, False)

    decoded = image_from_msg(msg)

    assert decoded.channel_order == "RGB"
    np.testing.assert_array_equal(decoded.pixels, rgb)
    assert np.shares_memory(decoded.pixels, np.frombuffer(msg.data, np.uint8))


def test_mono16_big_endian_message_is_read_in_host_order() -> None:
    gray = cv2.imread(str(IMAGES / "page.png"), cv2.IMREAD_GRAYSCALE)
    depth = gray.astype(np.uint16) * 200 + 3
    big_endian_rows = depth.astype(">u2").view(np.uint8).reshape(depth.shape[0], -1)
    msg = _padded_msg(big_endian_rows, depth.shape[1], "mono16", 2, True)

    decoded = image_from_msg(msg)

    assert decoded.channel_order == "MONO" and decoded.pixels.dtype == np.uint16
    np.testing.assert_array_equal(decoded.pixels[..., 0], depth)


def test_bad_messages_raise_image_decode_error() -> None:
    msg = Image(height=4, width=4, encoding="mono8", step=4, data=array.array("B", bytes(15)))
    with pytest.raises(ImageDecodeError, match="truncated"):
        image_from_msg(msg)
    msg = Image(height=4, width=4, encoding="32FC1", step=4, data=array.array("B", bytes(16)))
    with pytest.raises(ImageDecodeError, match="unknown image encoding '32FC1'"):
        image_from_msg(msg)
    with pytest.raises(ImageDecodeError, match="zero size"):
        image_from_msg(Image(encoding="rgb8"))


@pytest.mark.parametrize(
    ("encoding", "make_pixels"),
    [
        ("mono8", lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) // 13),  # labels-like
        ("mono16", lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 300),
        ("rgb8", lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)),
        ("bgra8", lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)),
    ],
)
def test_image_to_msg_survives_rclpy_serialization(
    encoding: str, make_pixels: Callable[[np.ndarray], np.ndarray]
) -> None:
    pixels = make_pixels(cv2.imread(str(IMAGES / "astronaut.png"), cv2.IMREAD_COLOR))
    header = _camera_header()

    msg = image_to_msg(pixels, encoding, header)
    restored = deserialize_message(serialize_message(msg), Image)

    assert restored.header == header
    assert (restored.height, restored.width, restored.encoding) == (512, 512, encoding)
    decoded = image_from_msg(restored)
    np.testing.assert_array_equal(decoded.pixels.reshape(pixels.shape), pixels)


def test_image_to_msg_copies_so_later_changes_do_not_reach_the_message() -> None:
    labels = np.zeros((48, 64), np.uint8)
    labels[10:20, 5:9] = 3
    msg = image_to_msg(labels, "mono8", _camera_header())
    labels[:] = 7
    published = np.frombuffer(msg.data, np.uint8).reshape(48, 64)
    assert published[15, 6] == 3 and published[0, 0] == 0
    assert isinstance(msg.data, array.array)


def test_image_to_msg_rejects_mismatched_arrays() -> None:
    with pytest.raises(ImageDecodeError, match="mono8"):
        image_to_msg(np.zeros((4, 4), np.int32), "mono8", _camera_header())


def test_compressed_message_decodes_real_jpeg() -> None:
    jpeg = (IMAGES / "quokka.jpg").read_bytes()
    msg = CompressedImage(header=_camera_header(), format="jpeg", data=array.array("B", jpeg))

    decoded = compressed_image_from_msg(msg)

    assert decoded.channel_order == "BGR"
    np.testing.assert_array_equal(
        decoded.pixels, cv2.imread(str(IMAGES / "quokka.jpg"), cv2.IMREAD_COLOR)
    )


def test_corrupt_compressed_message_raises() -> None:
    jpeg = (IMAGES / "quokka.jpg").read_bytes()
    msg = CompressedImage(format="jpeg", data=array.array("B", jpeg[: len(jpeg) // 3]))
    with pytest.raises(ImageDecodeError, match="truncated"):
        compressed_image_from_msg(msg)


def test_headers_convert_both_ways_for_mixed_raw_and_object_paths() -> None:
    header = _camera_header()
    raw = message_header(header)
    assert raw == MessageHeader(1_732_000_000, 250_000_001, "front_camera_optical")
    assert header_msg(raw) == header

    # A frame taken in through the raw path and answered through it keeps its header.
    labels = np.arange(30, dtype=np.uint8).reshape(5, 6)
    serialized = serialize_image(raw, encode_image(labels, "mono8"))
    assert parse_image(serialized).header == raw
    assert deserialize_message(serialized, Image).header == header


def test_malloc_tuning_applies_on_glibc() -> None:
    is_glibc = platform.libc_ver()[0] == "glibc"
    assert tune_malloc_for_large_messages() is is_glibc
