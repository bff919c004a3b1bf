"""The raw CDR reader on hand-built, truncated and malformed bytes (pure: no rclpy needed).

Agreement with rclpy on valid messages is tested in test_cdr.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from trt_perception.errors import ImageDecodeError
from trt_perception.image_decoding import RawImage, encode_image
from trt_perception.ros.cdr import (
    MalformedCdrError,
    MessageHeader,
    parse_compressed_image,
    parse_image,
    serialize_image,
)

IMAGES = Path(__file__).parent / "fixtures" / "images"
HEADER = MessageHeader(stamp_sec=1_700_000_123, stamp_nanosec=999_999_999, frame_id="cam_ä")


def _cdr_string(order: str, text: str) -> bytes:
    encoded = text.encode() + b"\0"
    return struct.pack(order + "I", len(encoded)) + encoded


def _hand_built_image(
    order: str, header: MessageHeader, image: RawImage, padding: bytes = b"\0"
) -> bytes:
    """Image CDR written field by field from the IDL, independently of the code under test.

    ``padding`` is the alignment fill byte; b"" leaves the alignment padding out (malformed).
    """
    out = bytearray(b"\x00\x00\x00\x00" if order == ">" else b"\x00\x01\x00\x00")

    def align() -> None:
        out.extend(padding * (-(len(out) - 4) % 4))

    out += struct.pack(order + "iI", header.stamp_sec, header.stamp_nanosec)
    out += _cdr_string(order, header.frame_id)
    align()
    out += struct.pack(order + "II", image.height, image.width)
    out += _cdr_string(order, image.encoding)
    out += bytes([image.is_bigendian])
    align()
    out += struct.pack(order + "II", image.step, image.data.size)
    return bytes(out) + image.data.tobytes()


@pytest.fixture(scope="module")
def photo() -> RawImage:
    bgr = cv2.imread(str(IMAGES / "coffee.png"), cv2.IMREAD_COLOR)
    return encode_image(bgr[:30, :41], "bgr8")


@pytest.mark.parametrize("order", ["<", ">"])
def test_both_byte_orders_parse_to_the_same_message(order: str, photo: RawImage) -> None:
    parsed = parse_image(_hand_built_image(order, HEADER, photo, padding=b"\xee"))
    assert parsed.header == HEADER
    assert (parsed.height, parsed.width, parsed.step) == (photo.height, photo.width, photo.step)
    assert (parsed.encoding, parsed.is_bigendian) == ("bgr8", False)
    np.testing.assert_array_equal(parsed.decode().pixels.reshape(-1), photo.data)


def test_our_serializer_writes_the_hand_built_layout(photo: RawImage) -> None:
    for frame_id in ("", "a", "ab", "abc", "abcd", "kamera_ü_前"):
        header = MessageHeader(-7, 8, frame_id)
        assert serialize_image(header, photo) == _hand_built_image("<", header, photo)


@pytest.mark.parametrize(
    "as_buffer",
    [bytes, bytearray, memoryview, lambda data: np.frombuffer(data, np.uint8)],
    ids=["bytes", "bytearray", "memoryview", "ndarray"],
)
def test_pixel_data_is_a_read_only_view_of_the_serialized_bytes(
    as_buffer: Callable[[bytes], Any], photo: RawImage
) -> None:
    buffer = as_buffer(serialize_image(HEADER, photo))
    parsed = parse_image(buffer)
    assert np.shares_memory(parsed.data, np.frombuffer(buffer, np.uint8))
    assert not parsed.data.flags.writeable
    decoded = parsed.decode()
    assert decoded.channel_order == "BGR"
    np.testing.assert_array_equal(decoded.pixels.reshape(-1), photo.data)


def test_compressed_image_parses_and_decodes_real_jpeg() -> None:
    jpeg = (IMAGES / "quokka.jpg").read_bytes()
    serialized = (
        b"\x00\x01\x00\x00"
        + struct.pack("<iI", 5, 6)
        + _cdr_string("<", "")  # 5 bytes: 3 bytes padding align the next length
        + b"\0\0\0"
        + _cdr_string("<", "bgr8; jpeg compressed bgr8")  # 31 bytes: 1 byte padding
        + b"\0"
        + struct.pack("<I", len(jpeg))
        + jpeg
    )
    parsed = parse_compressed_image(serialized)
    assert parsed.header == MessageHeader(5, 6, "")
    assert parsed.format == "bgr8; jpeg compressed bgr8"
    assert parsed.data.tobytes() == jpeg
    expected = cv2.imread(str(IMAGES / "quokka.jpg"), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(parsed.decode().pixels, expected)


def test_every_truncation_is_rejected_naming_the_field(photo: RawImage) -> None:
    serialized = serialize_image(HEADER, photo)
    for size in range(len(serialized)):
        with pytest.raises(MalformedCdrError, match="shorter than|truncated"):
            parse_image(serialized[:size])
    with pytest.raises(MalformedCdrError, match="field 'data' needs"):
        parse_image(serialized[:-1])
    with pytest.raises(MalformedCdrError, match="field 'header.frame_id' needs"):
        parse_image(serialized[:20])


def _with_uint32_at(serialized: bytes, offset: int, value: int) -> bytes:
    return serialized[:offset] + struct.pack("<I", value) + serialized[offset + 4 :]


def test_lengths_beyond_the_end_are_rejected_without_reading_them(photo: RawImage) -> None:
    serialized = serialize_image(HEADER, photo)
    frame_id_length_offset = 12
    data_length_offset = len(serialized) - photo.data.size - 4
    fields = [(frame_id_length_offset, "header.frame_id"), (data_length_offset, "data")]
    for offset, field in fields:
        for bad_length in (2**32 - 1, 2**31, len(serialized)):
            with pytest.raises(MalformedCdrError, match=f"'{field}' needs {bad_length} bytes"):
                parse_image(_with_uint32_at(serialized, offset, bad_length))


@pytest.mark.parametrize("encapsulation", [b"\x00\x02", b"\x00\x07", b"\x01\x00", b"\xff\xff"])
def test_unknown_encapsulation_is_rejected(encapsulation: bytes, photo: RawImage) -> None:
    serialized = encapsulation + serialize_image(HEADER, photo)[2:]
    with pytest.raises(MalformedCdrError, match=f"encapsulation id 0x{encapsulation.hex()}"):
        parse_image(serialized)


def test_unaligned_fields_are_rejected(photo: RawImage) -> None:
    # frame_id "ab" ends 3 bytes short of a 4-byte boundary: a writer that forgets the alignment
    # padding shifts every later field, which the length checks catch.
    header = MessageHeader(1, 2, "ab")
    unpadded = _hand_built_image("<", header, photo, padding=b"")
    assert parse_image(_hand_built_image("<", header, photo)).header == header
    with pytest.raises(MalformedCdrError):
        parse_image(unpadded)


def test_end_padding_is_accepted_but_trailing_garbage_is_not(photo: RawImage) -> None:
    serialized = serialize_image(HEADER, photo)
    assert parse_image(serialized + b"\0\0\0").header == HEADER
    with pytest.raises(MalformedCdrError, match="4 unexpected bytes after its last field"):
        parse_image(serialized + b"\0\0\0\0")


def test_strings_must_be_nul_terminated_utf8_without_inner_nul(photo: RawImage) -> None:
    serialized = serialize_image(MessageHeader(1, 2, "abc"), photo)
    frame_id = slice(16, 20)  # length 4 at 12..16, then "abc\0"
    assert serialized[frame_id] == b"abc\0"
    cases = [
        (b"abcd", "does not end with NUL"),
        (b"a\0c\0", "NUL byte inside"),
        (b"\xc3\x28x\0", "not valid UTF-8"),
    ]
    for content, problem in cases:
        broken = serialized[: frame_id.start] + content + serialized[frame_id.stop :]
        with pytest.raises(MalformedCdrError, match=f"'header.frame_id'.*({problem})"):
            parse_image(broken)


def test_empty_string_with_zero_length_reads_as_empty(photo: RawImage) -> None:
    header = MessageHeader(1, 2, "")
    serialized = serialize_image(header, photo)
    # Fast CDR accepts a length of 0 (no NUL) for the empty string.
    assert serialized[12:20] == struct.pack("<I", 1) + b"\0\0\0\0"  # length, NUL, padding
    zero_length = serialized[:12] + struct.pack("<I", 0) + serialized[20:]
    assert parse_image(zero_length).header == header


def test_malformed_cdr_is_an_image_decode_error() -> None:
    with pytest.raises(ImageDecodeError, match="shorter than the 4-byte CDR encapsulation header"):
        parse_image(b"\x00\x01")


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (MessageHeader(2**31, 0, ""), "header.stamp.sec"),
        (MessageHeader(0, -1, ""), "header.stamp.nanosec"),
        (MessageHeader(0, 0, "a\0b"), "header.frame_id' contains a NUL"),
    ],
)
def test_serializer_rejects_values_rclpy_could_not_hold(
    header: MessageHeader, problem: str, photo: RawImage
) -> None:
    with pytest.raises(ValueError, match=problem):
        serialize_image(header, photo)


def test_serializer_rejects_data_that_does_not_fill_step_times_height(photo: RawImage) -> None:
    short = RawImage(photo.data[:-1], photo.height, photo.width, "bgr8", photo.step, False)
    with pytest.raises(ValueError, match="not step"):
        serialize_image(HEADER, short)
