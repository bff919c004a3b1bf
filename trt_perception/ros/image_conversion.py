"""``sensor_msgs/Image`` and ``CompressedImage`` objects <-> numpy pixels (normal rclpy path).

Reading is zero-copy: rclpy gives ``Image.data`` as an ``array.array('B')`` and the pixels are a
numpy view of it. Writing copies the pixels exactly once: into a fresh ``array.array`` that is
handed to a message created with ``check_fields=True``, whose ``data`` setter then keeps the array
as it is. (With the default ``check_fields=False`` the setter copies every value again through
``array.array('B', value)``, and assigning a numpy array there converts it element by element,
which takes ~0.4 s at 1080p.) Measured numbers: ``bench/bench_image_transport.py``.

The raw CDR path (``trt_perception.ros.cdr``) avoids the message objects altogether.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
from typing import Any

import numpy.typing as npt
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from trt_perception.image_decoding import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    decode_compressed,
    decode_image,
    encode_image,
)
from trt_perception.ros.cdr import MessageHeader

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 64 << 20  # above a 4K rgb8 frame (25 MB)
_TRIM_THRESHOLD_BYTES = 256 << 20


def image_from_msg(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """The pixels of an Image message as an HxWxC view of ``msg.data`` (no copy for 8-bit data
    and for 16-bit data in this machine's byte order). Raises ImageDecodeError for bad images."""
    return decode_image(
        msg.data, msg.height, msg.width, msg.encoding, msg.step, bool(msg.is_bigendian), max_pixels
    )


def compressed_image_from_msg(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """The decoded jpeg/png pixels of a CompressedImage message. Raises ImageDecodeError."""
    return decode_compressed(msg.data, msg.format, max_pixels)


def image_to_msg(pixels: npt.NDArray[Any], encoding: str, header: Header) -> Image:
    """An Image message holding ``pixels`` (dtype and channels must fit ``encoding``) with
    ``header`` (stamp and frame_id) copied from the input. Copies the pixels once."""
    raw = encode_image(pixels, encoding)
    data = array.array("B")
    data.frombytes(memoryview(raw.data))  # type: ignore[arg-type]
    msg = Image(check_fields=True)
    msg.header = header
    msg.height = raw.height
    msg.width = raw.width
    msg.encoding = raw.encoding
    msg.is_bigendian = int(raw.is_bigendian)
    msg.step = raw.step
    msg.data = data  # kept as is (no copy) because check_fields is on
    return msg


def message_header(header: Header) -> MessageHeader:
    """The stamp and frame id of a ``std_msgs/Header``, for ``cdr.serialize_image``."""
    return MessageHeader(header.stamp.sec, header.stamp.nanosec, header.frame_id)


def header_msg(header: MessageHeader) -> Header:
    """A ``std_msgs/Header`` from a header read by the raw CDR path (for normal publishers)."""
    msg = Header(frame_id=header.frame_id)
    msg.stamp.sec = header.stamp_sec
    msg.stamp.nanosec = header.stamp_nanosec
    return msg


def c_library_function(name: str) -> Any | None:
    """The C library's function ``name`` (ctypes), or ``None`` where it has none (not glibc)."""
    library = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(library), name) if library else None
    except (OSError, AttributeError):
        return None


def return_free_heap() -> bool:
    """Give the C heap's free memory back to the operating system (glibc ``malloc_trim``): with the
    tuning below the process keeps freed memory, so a released model's would otherwise stay. False
    where the C library has no ``malloc_trim``."""
    malloc_trim = c_library_function("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


def tune_malloc_for_large_messages() -> bool:
    """Make glibc keep freed image-sized buffers for reuse instead of returning them to the OS.

    By default every multi-megabyte buffer rclpy allocates per message is mmap'ed and unmapped
    again, so each frame pays page faults on fresh memory: measured on the dev machine, rclpy's
    deserialize of a 1080p rgb8 Image drops from ~11.5 ms to ~0.9 ms and image_to_msg +
    serialize_message from ~15 ms to ~1.4 ms with this (bench/bench_image_transport.py
    --tune-malloc). The cost is that the process keeps its peak heap. Call once at node start-up.
    Returns False where the C library has no ``mallopt`` (not glibc).
    """
    mallopt = c_library_function("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    )
