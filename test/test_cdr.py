"""The raw CDR reader/writer agrees exactly with rclpy's (de)serialization (needs rclpy)."""

from __future__ import annotations

import array

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

from trt_perception.image_decoding import PIXEL_FORMATS, RawImage
from trt_perception.ros.cdr import (
    MessageHeader,
    parse_compressed_image,
    parse_image,
    serialize_image,
)

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# ROS strings are NUL-terminated C strings: any other unicode character may appear.
ros_strings = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]))
headers = st.builds(
    MessageHeader,
    stamp_sec=st.integers(-(2**31), 2**31 - 1),
    stamp_nanosec=st.integers(0, 2**32 - 1),
    frame_id=ros_strings,
)


@st.composite
def raw_images(draw: st.DrawFn) -> RawImage:
    """A valid image of a known encoding with random size, row padding, byte order and pixels."""
    encoding = draw(st.sampled_from(sorted(PIXEL_FORMATS)))
    fmt = PIXEL_FORMATS[encoding]
    height = draw(st.integers(1, 9))
    width = draw(st.integers(1, 9))
    step = width * fmt.channels * fmt.dtype.itemsize + draw(st.integers(0, 7))
    data = draw(st.binary(min_size=step * height, max_size=step * height))
    return RawImage(
        data=np.frombuffer(data, np.uint8),
        height=height,
        width=width,
        encoding=encoding,
        step=step,
        is_bigendian=draw(st.booleans()),
    )


def _image_msg(header: MessageHeader, image: RawImage) -> Image:
    msg = Image(
        height=image.height,
        width=image.width,
        encoding=image.encoding,
        is_bigendian=int(image.is_bigendian),
        step=image.step,
        data=array.array("B", image.data.tobytes()),
    )
    msg.header.stamp.sec = header.stamp_sec
    msg.header.stamp.nanosec = header.stamp_nanosec
    msg.header.frame_id = header.frame_id
    return msg


def _rows(data: bytes, height: int, step: int, row_bytes: int) -> np.ndarray:
    return np.frombuffer(data, np.uint8).reshape(height, step)[:, :row_bytes]


@PROPERTY_SETTINGS
@given(header=headers, image=raw_images())
def test_raw_parse_equals_rclpy_deserialization(header: MessageHeader, image: RawImage) -> None:
    serialized = serialize_message(_image_msg(header, image))
    expected = deserialize_message(serialized, Image)

    parsed = parse_image(serialized)

    assert parsed.header == MessageHeader(
        expected.header.stamp.sec, expected.header.stamp.nanosec, expected.header.frame_id
    )
    assert (parsed.height, parsed.width, parsed.encoding, parsed.step) == (
        expected.height,
        expected.width,
        expected.encoding,
        expected.step,
    )
    assert parsed.is_bigendian == bool(expected.is_bigendian)
    assert parsed.data.tobytes() == expected.data.tobytes()
    assert np.shares_memory(parsed.data, np.frombuffer(serialized, np.uint8))

    pixels = parsed.decode().pixels
    fmt = PIXEL_FORMATS[expected.encoding]
    row_bytes = expected.width * fmt.channels * fmt.dtype.itemsize
    rows = _rows(expected.data.tobytes(), expected.height, expected.step, row_bytes)
    stored = fmt.dtype.newbyteorder(">" if expected.is_bigendian else "<")
    reference = rows.copy().view(stored).reshape(expected.height, expected.width, fmt.channels)
    np.testing.assert_array_equal(pixels, reference)


@PROPERTY_SETTINGS
@given(
    header=headers,
    height=st.integers(0, 2**32 - 1),
    width=st.integers(0, 2**32 - 1),
    step=st.integers(0, 2**32 - 1),
    encoding=ros_strings,
    is_bigendian=st.booleans(),
    data=st.binary(max_size=64),
)
def test_raw_parse_reads_any_field_values_like_rclpy(
    header: MessageHeader,
    height: int,
    width: int,
    step: int,
    encoding: str,
    is_bigendian: bool,
    data: bytes,
) -> None:
    """Field values that do not form a valid image are still read exactly (decode rejects them)."""
    image = RawImage(np.frombuffer(data, np.uint8), height, width, encoding, step, is_bigendian)
    serialized = serialize_message(_image_msg(header, image))

    parsed = parse_image(serialized)

    assert parsed.header == header
    assert (parsed.height, parsed.width, parsed.step) == (height, width, step)
    assert (parsed.encoding, parsed.is_bigendian) == (encoding, is_bigendian)
    assert parsed.data.tobytes() == data


@PROPERTY_SETTINGS
@given(header=headers, image=raw_images())
def test_our_serialization_is_what_rclpy_writes_and_reads(
    header: MessageHeader, image: RawImage
) -> None:
    ours = serialize_image(header, image)

    # Same layout as rclpy's bytes (whose alignment padding is uninitialised memory, so only
    # the length is compared byte-wise) and the same message when rclpy reads it.
    assert len(ours) == len(serialize_message(_image_msg(header, image)))
    restored = deserialize_message(ours, Image)
    assert restored == _image_msg(header, image)
    assert restored.header.frame_id == header.frame_id
    assert restored.data.tobytes() == image.data.tobytes()


@PROPERTY_SETTINGS
@given(header=headers, format_string=ros_strings, data=st.binary(max_size=64))
def test_compressed_image_parse_equals_rclpy(
    header: MessageHeader, format_string: str, data: bytes
) -> None:
    msg = CompressedImage(format=format_string, data=array.array("B", data))
    msg.header.stamp.sec = header.stamp_sec
    msg.header.stamp.nanosec = header.stamp_nanosec
    msg.header.frame_id = header.frame_id
    serialized = serialize_message(msg)

    parsed = parse_compressed_image(serialized)

    expected = deserialize_message(serialized, CompressedImage)
    assert parsed.header == MessageHeader(
        expected.header.stamp.sec, expected.header.stamp.nanosec, expected.header.frame_id
    )
    assert parsed.format == expected.format
    assert parsed.data.tobytes() == expected.data.tobytes()


def test_serialized_label_image_round_trips_through_rclpy() -> None:
    """A real-sized label image: our bytes deserialize to the labels and header we meant."""
    labels = (np.arange(480 * 640, dtype=np.uint32) % 19).astype(np.uint8).reshape(480, 640)
    image = RawImage(labels.reshape(-1), 480, 640, "mono8", 640, False)
    header = MessageHeader(1_700_000_000, 123_456_789, "camera_optical_frame")

    restored = deserialize_message(serialize_image(header, image), Image)

    assert restored.header.stamp.sec == 1_700_000_000
    assert restored.header.stamp.nanosec == 123_456_789
    assert restored.header.frame_id == "camera_optical_frame"
    assert (restored.height, restored.width, restored.step, restored.encoding) == (
        480,
        640,
        640,
        "mono8",
    )
    np.testing.assert_array_equal(np.frombuffer(restored.data, np.uint8).reshape(480, 640), labels)


def test_a_frame_id_that_is_not_utf8_is_refused_by_every_node_reader() -> None:
    """rclpy replaces the bytes of a frame id that are not UTF-8 (U+FFFD); the node's readers, raw and
    rclpy alike, refuse the frame instead of publishing results under an altered frame id."""
    import pytest

    from trt_perception.errors import ImageDecodeError
    from trt_perception.ros.perception_node import (
        read_compressed_message,
        read_image_message,
        read_serialized_compressed,
        read_serialized_image,
    )

    pixels = np.zeros(4 * 4 * 3, np.uint8)
    image_bytes = serialize_image(MessageHeader(1, 2, "cam"), RawImage(pixels, 4, 4, "rgb8", 12, False))
    compressed = CompressedImage(format="png", data=array.array("B", bytes(range(8))))
    compressed.header.frame_id = "cam"
    compressed_bytes = serialize_message(compressed)
    for data, message_type, readers in (
        (image_bytes, Image, (read_serialized_image, read_image_message)),
        (compressed_bytes, CompressedImage, (read_serialized_compressed, read_compressed_message)),
    ):
        bad = data.replace(b"cam\0", b"\xff\xfe\xfd\0", 1)
        assert deserialize_message(bad, message_type).header.frame_id == "\ufffd" * 3
        for reader in readers:
            with pytest.raises(ImageDecodeError, match="string 'header.frame_id' is not valid UTF-8"):
                reader(bad, 1 << 20)
