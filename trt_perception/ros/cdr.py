"""Read and write serialized (CDR) ``sensor_msgs/Image`` and ``CompressedImage`` without rclpy.

rclpy's ``deserialize_message``/``serialize_message`` build Python objects and copy the pixels
through ``array.array``; at 1080p that costs milliseconds per frame. Here the serialized bytes
from a raw subscription are parsed in place (the pixel data becomes a numpy view of them) and
output images are serialized with one allocation and one copy of the pixels.

Wire format (XCDR1 plain CDR, as rmw_fastrtps writes it): a 4-byte encapsulation header
(``00 00`` big-endian or ``00 01`` little-endian, then 2 option bytes), then the fields in
declaration order; each primitive is aligned to its size counted from the end of the
encapsulation header; strings are a uint32 length including the terminating NUL followed by the
bytes; ``uint8[]`` is a uint32 count followed by the bytes.

Pure Python/numpy: importing this module does not need ROS.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trt_perception.errors import ImageDecodeError
from trt_perception.image_decoding import (
    DEFAULT_MAX_PIXELS,
    Buffer,
    DecodedImage,
    RawImage,
    byte_view,
    decode_compressed,
    decode_image,
)

ENCAPSULATION_SIZE = 4
_CDR_BIG_ENDIAN = b"\x00\x00"
_CDR_LITTLE_ENDIAN = b"\x00\x01"
_LITTLE_ENDIAN_HEADER = _CDR_LITTLE_ENDIAN + b"\x00\x00"
# Serializers may pad the end of a message to a multiple of 4 bytes; more than that is malformed.
_MAX_TRAILING_PADDING = 3

_INT32 = {order: struct.Struct(order + "i") for order in "<>"}
_UINT32 = {order: struct.Struct(order + "I") for order in "<>"}
_UINT8 = struct.Struct("B")
_INT32_RANGE = (-(2**31), 2**31 - 1)
_UINT32_RANGE = (0, 2**32 - 1)


class MalformedCdrError(ImageDecodeError):
    """Serialized message bytes are truncated or not a valid CDR encoding of the expected type."""


@dataclass(frozen=True)
class MessageHeader:
    """The fields of ``std_msgs/Header``: stamp (seconds, nanoseconds) and frame id."""

    stamp_sec: int
    stamp_nanosec: int
    frame_id: str


@dataclass(frozen=True)
class CdrImage:
    """A ``sensor_msgs/Image`` read from CDR bytes; ``data`` is a read-only view of those bytes."""

    header: MessageHeader
    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: npt.NDArray[np.uint8]

    def decode(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
        """The pixels as an HxWxC view (see ``image_decoding.decode_image``)."""
        return decode_image(
            self.data, self.height, self.width, self.encoding, self.step, self.is_bigendian, max_pixels
        )


@dataclass(frozen=True)
class CdrCompressedImage:
    """A ``sensor_msgs/CompressedImage`` read from CDR bytes; ``data`` views those bytes."""

    header: MessageHeader
    format: str
    data: npt.NDArray[np.uint8]

    def decode(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
        """The decoded jpeg/png pixels (see ``image_decoding.decode_compressed``)."""
        return decode_compressed(self.data, self.format, max_pixels)


class _CdrReader:
    """Reads aligned CDR primitives from a byte buffer, never past its end."""

    def __init__(self, buffer: Buffer, type_name: str) -> None:
        self._bytes = byte_view(buffer)
        self._view = memoryview(self._bytes)  # type: ignore[arg-type]
        self._type_name = type_name
        size = self._bytes.size
        if size < ENCAPSULATION_SIZE:
            raise MalformedCdrError(
                f"serialized {type_name} is {size} bytes, shorter than the "
                f"{ENCAPSULATION_SIZE}-byte CDR encapsulation header"
            )
        representation = self._view[:2].tobytes()
        if representation == _CDR_LITTLE_ENDIAN:
            self._order = "<"
        elif representation == _CDR_BIG_ENDIAN:
            self._order = ">"
        else:
            raise MalformedCdrError(
                f"serialized {type_name} has encapsulation id 0x{representation.hex()}; "
                f"expected plain CDR 0x0000 (big-endian) or 0x0001 (little-endian)"
            )
        self._position = ENCAPSULATION_SIZE  # absolute offset of the next byte to read

    def _take(self, size: int, alignment: int, field: str) -> int:
        """Align, check that ``size`` bytes follow, and return their absolute offset."""
        offset = self._position + (-(self._position - ENCAPSULATION_SIZE) % alignment)
        end = offset + size
        if end > self._bytes.size:
            raise MalformedCdrError(
                f"serialized {self._type_name} is truncated: field '{field}' needs {size} bytes "
                f"at offset {offset}, but the message has {self._bytes.size} bytes"
            )
        self._position = end
        return offset

    def _unpack(self, fmt: struct.Struct, field: str) -> Any:
        """The next value of ``fmt`` (aligned to its own size)."""
        return fmt.unpack_from(self._view, self._take(fmt.size, fmt.size, field))[0]

    def int32(self, field: str) -> int:
        """The next ``int32``; ``field`` names it in truncation errors."""
        return int(self._unpack(_INT32[self._order], field))

    def uint32(self, field: str) -> int:
        """The next ``uint32``; ``field`` names it in truncation errors."""
        return int(self._unpack(_UINT32[self._order], field))

    def boolean_byte(self, field: str) -> bool:
        """The next byte as a ``bool`` (any non-zero value is true)."""
        return bool(self._unpack(_UINT8, field))

    def string(self, field: str) -> str:
        """The next CDR string (uint32 length including the NUL, bytes, NUL) as UTF-8 text; raises
        ``MalformedCdrError`` when it lacks the final NUL, holds another NUL or is not UTF-8."""
        length = self.uint32(f"{field} length")
        offset = self._take(length, 1, field)
        if length == 0:  # tolerated by Fast CDR as the empty string
            return ""
        raw = self._view[offset : offset + length - 1].tobytes()
        if self._view[offset + length - 1] != 0:
            raise MalformedCdrError(
                f"serialized {self._type_name}: string '{field}' ({length} bytes) does not end "
                f"with NUL"
            )
        if 0 in raw:
            raise MalformedCdrError(
                f"serialized {self._type_name}: string '{field}' contains a NUL byte inside"
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise MalformedCdrError(
                f"serialized {self._type_name}: string '{field}' is not valid UTF-8 ({error})"
            ) from None

    def byte_sequence(self, field: str) -> npt.NDArray[np.uint8]:
        """The next ``uint8[]`` sequence as a read-only view of the buffer (no copy)."""
        length = self.uint32(f"{field} length")
        offset = self._take(length, 1, field)
        data = self._bytes[offset : offset + length]
        data.flags.writeable = False
        return data

    def header(self) -> MessageHeader:
        """The next ``std_msgs/Header`` (stamp seconds, nanoseconds, frame id)."""
        return MessageHeader(
            stamp_sec=self.int32("header.stamp.sec"),
            stamp_nanosec=self.uint32("header.stamp.nanosec"),
            frame_id=self.string("header.frame_id"),
        )

    def finish(self) -> None:
        """Check that nothing but end padding follows the last field."""
        trailing = self._bytes.size - self._position
        if trailing > _MAX_TRAILING_PADDING:
            raise MalformedCdrError(
                f"serialized {self._type_name} has {trailing} unexpected bytes after its last "
                f"field (offset {self._position})"
            )


def parse_image(buffer: Buffer) -> CdrImage:
    """Read a serialized ``sensor_msgs/Image`` (e.g. from a ``raw=True`` subscription).

    The returned ``data`` is a view of ``buffer`` (no copy). Raises MalformedCdrError (an
    ImageDecodeError) naming the field for truncated or malformed bytes.
    """
    reader = _CdrReader(buffer, "sensor_msgs/Image")
    image = CdrImage(
        header=reader.header(),
        height=reader.uint32("height"),
        width=reader.uint32("width"),
        encoding=reader.string("encoding"),
        is_bigendian=reader.boolean_byte("is_bigendian"),
        step=reader.uint32("step"),
        data=reader.byte_sequence("data"),
    )
    reader.finish()
    return image


def parse_header(buffer: Buffer, type_name: str) -> MessageHeader:
    """The ``std_msgs/Header`` a serialized message begins with, read as strictly as ``parse_image``
    reads it (a ``frame_id`` that is not UTF-8 is refused, not replaced); ``type_name`` names the
    message in errors."""
    return _CdrReader(buffer, type_name).header()


def parse_compressed_image(buffer: Buffer) -> CdrCompressedImage:
    """Read a serialized ``sensor_msgs/CompressedImage``; ``data`` is a view of ``buffer``."""
    reader = _CdrReader(buffer, "sensor_msgs/CompressedImage")
    image = CdrCompressedImage(
        header=reader.header(),
        format=reader.string("format"),
        data=reader.byte_sequence("data"),
    )
    reader.finish()
    return image


def _checked(value: int, bounds: tuple[int, int], field: str) -> int:
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"sensor_msgs/Image field '{field}' = {value} is outside {bounds}")
    return value


def _cdr_string(value: str, field: str) -> bytes:
    encoded = value.encode("utf-8")
    if b"\0" in encoded:
        raise ValueError(f"sensor_msgs/Image field '{field}' contains a NUL character")
    return struct.pack("<I", len(encoded) + 1) + encoded + b"\0"


def _pad_to_4(prefix: bytearray) -> None:
    prefix.extend(b"\0" * (-(len(prefix) - ENCAPSULATION_SIZE) % 4))


def serialize_image(header: MessageHeader, image: RawImage) -> bytes:
    """Little-endian CDR bytes of a ``sensor_msgs/Image``, ready for ``publisher.publish``.

    The pixels are copied once, straight into the returned bytes.
    """
    if image.data.nbytes != image.step * image.height:
        raise ValueError(
            f"image data has {image.data.nbytes} bytes, not step {image.step} x height "
            f"{image.height}"
        )
    prefix = bytearray(_LITTLE_ENDIAN_HEADER)
    prefix += struct.pack(
        "<iI",
        _checked(header.stamp_sec, _INT32_RANGE, "header.stamp.sec"),
        _checked(header.stamp_nanosec, _UINT32_RANGE, "header.stamp.nanosec"),
    )
    prefix += _cdr_string(header.frame_id, "header.frame_id")
    _pad_to_4(prefix)
    prefix += struct.pack(
        "<II",
        _checked(image.height, _UINT32_RANGE, "height"),
        _checked(image.width, _UINT32_RANGE, "width"),
    )
    prefix += _cdr_string(image.encoding, "encoding")
    prefix.append(1 if image.is_bigendian else 0)
    _pad_to_4(prefix)
    prefix += struct.pack(
        "<II",
        _checked(image.step, _UINT32_RANGE, "step"),
        _checked(image.data.nbytes, _UINT32_RANGE, "data length"),
    )
    return b"".join((prefix, memoryview(image.data)))  # type: ignore[arg-type]
