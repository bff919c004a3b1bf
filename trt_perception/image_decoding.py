"""Raw and compressed camera images to numpy pixel views, and pixel arrays back to raw images.

Pure numpy/OpenCV, no ROS: the ROS glue (``trt_perception.ros.image_conversion``) and the raw CDR
reader (``trt_perception.ros.cdr``) feed message fields into these functions.

Raw images follow the ``sensor_msgs/Image`` conventions: ``height`` rows of ``step`` bytes each,
of which the first ``width * channels * bytes_per_channel`` hold pixels (the rest is row padding);
16-bit data is big-endian when ``is_bigendian`` is set, little-endian otherwise.
"""

from __future__ import annotations

import array
import functools
import logging
import re
import sys
from dataclasses import dataclass
from typing import Any, Union, cast

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.camera_encodings import CAMERA_ENCODINGS, convert_to_bgr
from trt_perception.errors import ImageDecodeError

# Objects whose bytes we view without copying (a numpy array must be C-contiguous uint8).
Buffer = Union[bytes, bytearray, memoryview, "array.array[int]", "npt.NDArray[np.uint8]"]
# Decoded pixels: uint8 or host-order uint16.
Pixels = npt.NDArray[np.unsignedinteger[Any]]

HOST_IS_BIGENDIAN = sys.byteorder == "big"


@dataclass(frozen=True)
class PixelFormat:
    """How one raw encoding lays out a pixel."""

    channel_order: str
    channels: int
    dtype: np.dtype[np.unsignedinteger[Any]]


_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)

# ROS image encodings we read and write. The OpenCV-style "8UC3"/"8UC4" have no defined channel
# order; like cv_bridge, we take them as OpenCV's native BGR/BGRA.
PIXEL_FORMATS: dict[str, PixelFormat] = {
    "rgb8": PixelFormat("RGB", 3, _U8),
    "bgr8": PixelFormat("BGR", 3, _U8),
    "rgba8": PixelFormat("RGBA", 4, _U8),
    "bgra8": PixelFormat("BGRA", 4, _U8),
    "mono8": PixelFormat("MONO", 1, _U8),
    "8UC1": PixelFormat("MONO", 1, _U8),
    "8UC3": PixelFormat("BGR", 3, _U8),
    "8UC4": PixelFormat("BGRA", 4, _U8),
    "rgb16": PixelFormat("RGB", 3, _U16),
    "bgr16": PixelFormat("BGR", 3, _U16),
    "rgba16": PixelFormat("RGBA", 4, _U16),
    "bgra16": PixelFormat("BGRA", 4, _U16),
    "mono16": PixelFormat("MONO", 1, _U16),
    "16UC1": PixelFormat("MONO", 1, _U16),
}

# Channel order of what OpenCV decodes from a codec that does not say, by channel count.
_ORDER_OF_CHANNELS = {1: "MONO", 3: "BGR", 4: "BGRA"}
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CODEC_SIGNATURES = {"jpeg": _JPEG_SIGNATURE, "jpg": _JPEG_SIGNATURE, "png": _PNG_SIGNATURE}
# JPEG markers without a length field: TEM, RST0-7 (SOI and EOI are handled where they may occur).
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
# Start-of-frame markers (they hold the image size): C0-CF except DHT (C4), JPG (C8), DAC (CC).
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_START_OF_SCAN = 0xDA
_JPEG_END_OF_IMAGE_MARKER = 0xD9

# Default most pixels (width x height) a frame may have: above 8K UHD (7680 x 4320 = 33.2 MP). Checked from
# the message fields or the compressed header before anything is decoded, so a 100 KB PNG that claims
# 30000 x 30000 pixels costs nothing.
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class DecodedImage:
    """Pixels as an HxWxC read-only numpy array (uint8 or native uint16) and their channel order.

    ``pixels`` is usually a view of the message's own buffer: rows may be strided by the message's
    ``step``; call ``np.ascontiguousarray`` where a compact copy is needed.
    """

    pixels: Pixels
    channel_order: str

    @property
    def height(self) -> int:
        """Rows."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Columns."""
        return int(self.pixels.shape[1])


@dataclass(frozen=True)
class RawImage:
    """A packed image for a ``sensor_msgs/Image``: ``data`` is 1-D, C-contiguous uint8."""

    data: npt.NDArray[np.uint8]
    height: int
    width: int
    encoding: str
    step: int
    is_bigendian: bool


def pixel_format(encoding: str) -> PixelFormat:
    """The layout of a raw ROS image encoding; ImageDecodeError names unknown encodings."""
    try:
        return PIXEL_FORMATS[encoding]
    except KeyError:
        raise ImageDecodeError(
            f"unknown image encoding {encoding!r}; supported: "
            f"{', '.join([*PIXEL_FORMATS, *CAMERA_ENCODINGS])}"
        ) from None


def byte_view(data: Buffer) -> npt.NDArray[np.uint8]:
    """A flat uint8 view (no copy) of any object exposing a contiguous buffer."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or not data.flags.c_contiguous:
            raise ImageDecodeError(
                f"image data array must be C-contiguous uint8, got {data.dtype} "
                f"(contiguous: {data.flags.c_contiguous})"
            )
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as error:
        raise ImageDecodeError(f"image data is not a byte buffer: {error}") from None


class ImageTooLargeError(ImageDecodeError):
    """An image has more pixels than the configured limit (found before decoding it)."""


def check_pixel_count(width: int, height: int, max_pixels: int, what: str) -> None:
    """Raise ImageTooLargeError when ``width`` x ``height`` exceeds ``max_pixels`` (0: no limit)."""
    if max_pixels and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} = {width * height} pixels, more than max_pixels {max_pixels}; "
            f"not decoded (raise max_pixels to accept such images)"
        )


def decode_image(
    data: Buffer,
    height: int,
    width: int,
    encoding: str,
    step: int,
    is_bigendian: bool,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """View raw image bytes as HxWxC pixels without copying.

    Rows are ``step`` bytes apart (row padding is skipped, not copied). 16-bit data is copied
    only when its byte order differs from this machine's (byte-swapped) or an odd ``step`` leaves
    its samples unaligned. YUV 4:2:2, NV21/NV12 and
    Bayer encodings (``camera_encodings``) are converted to BGR, the one copy they need. Raises
    ImageDecodeError for an unknown encoding, zero size, more than ``max_pixels`` pixels (0: no
    limit; checked before anything is read), ``step`` shorter than a row of pixels, or data whose
    length is not ``step * height``.
    """
    if encoding in CAMERA_ENCODINGS:
        if height <= 0 or width <= 0:
            raise ImageDecodeError(f"{encoding} image has zero size: {width}x{height}")
        check_pixel_count(width, height, max_pixels, f"{encoding} image")
        bgr = convert_to_bgr(byte_view(data), height, width, encoding, step, is_bigendian)
        bgr.flags.writeable = False
        return DecodedImage(bgr, "BGR")
    fmt = pixel_format(encoding)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"{encoding} image has zero size: {width}x{height} (width x height)")
    check_pixel_count(width, height, max_pixels, f"{encoding} image")
    pixel_bytes = fmt.channels * fmt.dtype.itemsize
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageDecodeError(
            f"{encoding} image step {step} is shorter than one row of {width} pixels "
            f"({row_bytes} bytes)"
        )
    buffer = byte_view(data)
    expected = step * height
    if buffer.size < expected:
        raise ImageDecodeError(
            f"{encoding} image data truncated: {buffer.size} bytes, step {step} x height {height} "
            f"needs {expected}"
        )
    if buffer.size > expected:
        raise ImageDecodeError(
            f"{encoding} image data has {buffer.size} bytes, more than step {step} x height "
            f"{height} = {expected}"
        )
    stored_dtype = fmt.dtype
    if fmt.dtype.itemsize > 1:
        stored_dtype = fmt.dtype.newbyteorder(">" if is_bigendian else "<")
    pixels: Pixels = np.ndarray(
        shape=(height, width, fmt.channels),
        dtype=stored_dtype,
        buffer=buffer,
        strides=(step, pixel_bytes, fmt.dtype.itemsize),
    )
    if fmt.dtype.itemsize > 1 and (bool(is_bigendian) != HOST_IS_BIGENDIAN or not pixels.flags.aligned):
        # copied when the byte order differs, or when an odd step leaves samples at odd addresses (OpenCV
        # refuses such a view: "Step must be a multiple of esz1")
        pixels = pixels.astype(fmt.dtype.newbyteorder("="))
    elif fmt.dtype.itemsize > 1:
        pixels = pixels.view(fmt.dtype.newbyteorder("="))
    pixels.flags.writeable = False
    return DecodedImage(pixels, fmt.channel_order)


def _parse_compressed_format(format_string: str) -> tuple[str, PixelFormat | None]:
    """(codec, pixel format inside the codec or None) from a CompressedImage ``format``.

    Accepts a bare codec ("jpeg", "png") or image_transport's
    "<source encoding>; <codec> compressed <codec encoding>".
    """
    parts = [part.strip() for part in format_string.split(";")]
    codec_words = parts[-1].split() if len(parts) <= 2 else []
    if not codec_words or codec_words[0].lower() not in _CODEC_SIGNATURES:
        raise ImageDecodeError(
            f"unsupported compressed image format {format_string!r}; expected jpeg or png "
            f"(e.g. 'jpeg', 'png', 'rgb8; jpeg compressed bgr8')"
        )
    codec = codec_words[0].lower()
    if len(codec_words) == 1:
        return codec, None
    if len(codec_words) == 3 and codec_words[1] == "compressed" and codec_words[2] in PIXEL_FORMATS:
        return codec, PIXEL_FORMATS[codec_words[2]]
    raise ImageDecodeError(
        f"unsupported compressed image format {format_string!r}; expected "
        f"'<codec> compressed <encoding>' with a known encoding"
    )


_JPEG_NEXT_MARKER = re.compile(rb"\xff(?![\x00\xd0-\xd7\xff])")  # after entropy-coded data: FF00 is a stuffed byte


def _jpeg_frame_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header, after walking its markers up to the end-of-image
    marker (bytes after it, such as camera metadata or padding, are ignored).

    Raises ImageDecodeError for a JPEG that is truncated (no end-of-image marker), whose marker
    structure is broken, or that has a second frame header (libjpeg sizes the image by the first).
    """
    size: tuple[int, int] | None = None
    position = len(_JPEG_SIGNATURE) - 1  # the first marker after SOI
    while True:
        if position + 2 > len(data):
            raise ImageDecodeError(
                f"compressed jpeg image data ({len(data)} bytes) is truncated: no end-of-image marker"
            )
        if data[position] != 0xFF:
            raise ImageDecodeError(f"compressed jpeg image data is corrupt: no marker at offset {position}")
        marker = data[position + 1]
        position += 2
        if marker == 0xFF:  # fill byte before a marker
            position -= 1
            continue
        if marker == _JPEG_END_OF_IMAGE_MARKER:
            if size is None:
                raise ImageDecodeError("compressed jpeg image data has no frame header (SOF)")
            return size
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        length = int.from_bytes(data[position : position + 2], "big")
        if length < 2 or position + length > len(data):
            raise ImageDecodeError(
                f"compressed jpeg image data ({len(data)} bytes) is truncated or corrupt: segment 0x{marker:02X} "
                f"at offset {position - 2} claims {length} bytes"
            )
        if marker in _JPEG_FRAME_MARKERS and length >= 8:
            if size is not None:  # libjpeg sizes the image from the first: a later one must not hide it
                raise ImageDecodeError("compressed jpeg image data is corrupt: it has two frame headers (SOF)")
            height = int.from_bytes(data[position + 3 : position + 5], "big")
            width = int.from_bytes(data[position + 5 : position + 7], "big")
            size = (width, height)
        position += length
        if marker == _JPEG_START_OF_SCAN:
            if size is None:
                raise ImageDecodeError("compressed jpeg image data has a scan before its frame header (SOF)")
            next_marker = _JPEG_NEXT_MARKER.search(data, position)
            position = len(data) if next_marker is None else next_marker.start()


def _png_frame_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which must come first."""
    header = data[len(_PNG_SIGNATURE) : len(_PNG_SIGNATURE) + 16]
    if len(header) < 16 or header[4:8] != b"IHDR":
        raise ImageDecodeError("compressed png image data is corrupt: it does not start with an IHDR chunk")
    return int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")


def sniff_codec(data: Buffer) -> str | None:
    """``png`` or ``jpeg`` when ``data`` starts with that format's signature, else None."""
    head = byte_view(data)[: len(_PNG_SIGNATURE)].tobytes()
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    return "jpeg" if head.startswith(_JPEG_SIGNATURE) else None


def compressed_frame_size(data: Buffer, codec: str) -> tuple[int, int]:
    """(width, height) of jpeg or png data, read from its header without decoding the pixels."""
    raw = byte_view(data).tobytes()
    return _png_frame_size(raw) if codec == "png" else _jpeg_frame_size(raw)


@functools.cache
def _simplejpeg() -> Any:
    """The simplejpeg module, or None (then JPEGs go to OpenCV, which only warns about corrupt data:
    said once in the log)."""
    try:
        import simplejpeg
    except ImportError:
        logging.getLogger(__name__).warning(
            "simplejpeg is not installed (pip install simplejpeg): JPEGs are decoded by OpenCV, which fills "
            "corrupt data with grey instead of refusing it; truncated JPEGs are still refused"
        )
        return None
    return simplejpeg


def _decode_jpeg_strictly(buffer: npt.NDArray[np.uint8]) -> Pixels | None:
    """Grey or BGR pixels of a JPEG, decoded by libjpeg-turbo (simplejpeg: the same pixels as OpenCV's
    decoder) with its warnings as errors: data that libjpeg reports as corrupt ("premature end of data
    segment", "bad Huffman code", ...) and would fill with grey raises ImageDecodeError instead of being
    answered. Other colour spaces (CMYK), and every JPEG where simplejpeg is not installed, go to
    OpenCV; ``None`` when it cannot decode them."""
    simplejpeg = _simplejpeg()
    if simplejpeg is None:
        return cast("Pixels | None", cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED))
    data = buffer.tobytes()
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
        if colorspace == "Gray":
            return cast("Pixels", simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True))
        if colorspace in ("YCbCr", "RGB"):
            return cast("Pixels", simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True))
    except ValueError as error:
        raise ImageDecodeError(f"compressed jpeg image data ({buffer.size} bytes) is corrupt: {error}") from None
    return cast("Pixels | None", cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED))


def decode_compressed(
    data: Buffer, format: str, max_pixels: int = DEFAULT_MAX_PIXELS  # noqa: A002 (ROS field name)
) -> DecodedImage:
    """Decode a jpeg or png ``sensor_msgs/CompressedImage`` payload with OpenCV.

    ``format`` is the message's format string ("jpeg", "png", "rgb8; jpeg compressed bgr8", ...).
    The pixels keep the codec's channel order (BGR/BGRA for colour unless the format names
    another). Raises ImageDecodeError for empty, truncated or corrupt data, data that is not of
    the declared codec or pixel format, unsupported formats, and images whose header claims more
    than ``max_pixels`` pixels (0: no limit; checked before decoding). Bytes after a JPEG's
    end-of-image marker are ignored.
    """
    codec, declared = _parse_compressed_format(format)
    buffer = byte_view(data)
    if buffer.size == 0:
        raise ImageDecodeError(f"compressed {codec} image data is empty")
    signature = _CODEC_SIGNATURES[codec]
    if buffer[: len(signature)].tobytes() != signature:
        raise ImageDecodeError(
            f"compressed image data ({buffer.size} bytes) does not start with the {codec} "
            f"signature; the format says {format!r}"
        )
    width, height = compressed_frame_size(buffer, "png" if signature == _PNG_SIGNATURE else "jpeg")
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"compressed {codec} image header gives a zero size: {width}x{height}")
    check_pixel_count(width, height, max_pixels, f"compressed {codec} image")
    if signature == _JPEG_SIGNATURE:
        pixels: Pixels | None = _decode_jpeg_strictly(buffer)
    else:
        pixels = cast("Pixels | None", cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED))  # png: uint8/16
    if pixels is None:
        raise ImageDecodeError(f"compressed {codec} image data ({buffer.size} bytes) is corrupt")
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    channels = int(pixels.shape[2])
    if declared is None:
        if channels not in _ORDER_OF_CHANNELS:
            raise ImageDecodeError(f"compressed {codec} image decoded to {channels} channels")
        channel_order = _ORDER_OF_CHANNELS[channels]
    elif declared.channels == channels and declared.dtype == pixels.dtype:
        channel_order = declared.channel_order
    else:
        raise ImageDecodeError(
            f"compressed {codec} image decoded to {channels} channels of {pixels.dtype}, but the "
            f"format {format!r} declares {declared.channels} of {declared.dtype}"
        )
    pixels.flags.writeable = False
    return DecodedImage(pixels, channel_order)


def encode_image(pixels: npt.NDArray[Any], encoding: str) -> RawImage:
    """Pack an HxW or HxWxC array as a raw image of ``encoding`` (rows unpadded, host byte order).

    The array's dtype and channel count must match the encoding exactly (nothing is converted);
    a copy is made only if the array is not C-contiguous.
    """
    fmt = pixel_format(encoding)
    shaped = pixels[:, :, np.newaxis] if pixels.ndim == 2 else pixels
    if shaped.ndim != 3 or shaped.shape[2] != fmt.channels or pixels.dtype != fmt.dtype:
        raise ImageDecodeError(
            f"cannot encode a {pixels.dtype} array of shape {pixels.shape} as {encoding}: "
            f"needs {fmt.dtype} HxWx{fmt.channels}"
        )
    height, width = int(shaped.shape[0]), int(shaped.shape[1])
    if height == 0 or width == 0:
        raise ImageDecodeError(
            f"cannot encode an image of zero size {width}x{height} as {encoding}"
        )
    packed = np.ascontiguousarray(shaped)
    return RawImage(
        data=packed.reshape(-1).view(np.uint8),
        height=height,
        width=width,
        encoding=encoding,
        step=width * fmt.channels * fmt.dtype.itemsize,
        is_bigendian=HOST_IS_BIGENDIAN and fmt.dtype.itemsize > 1,
    )
