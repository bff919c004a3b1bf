"""Raw and compressed image decoding on real images (no ROS needed)."""

from __future__ import annotations

import array
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from trt_perception.errors import ImageDecodeError
from trt_perception.image_decoding import (
    ImageTooLargeError,
    compressed_frame_size,
    decode_compressed,
    decode_image,
    encode_image,
)

IMAGES = Path(__file__).parent / "fixtures" / "images"
ROW_PADDINGS = (0, 1, 13)


def _bgr(name: str) -> np.ndarray:
    image = cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR)
    assert image is not None, name
    return image


def _raw_rows(pixels: np.ndarray, padding: int, fill: int = 0xAB) -> tuple[bytes, int]:
    """Rows of ``pixels`` (in their stored byte order), each followed by ``padding`` fill bytes."""
    height = pixels.shape[0]
    row = np.ascontiguousarray(pixels).reshape(height, -1).view(np.uint8)
    step = row.shape[1] + padding
    rows = np.full((height, step), fill, np.uint8)
    rows[:, : row.shape[1]] = row
    return rows.tobytes(), step


def _layouts() -> dict[str, tuple[np.ndarray, str]]:
    """Per encoding: the expected HxWxC pixels (built with OpenCV from a real photo) and order."""
    bgr = _bgr("astronaut.png")[:97, :131]  # odd sizes catch row/column mix-ups
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = gray  # a non-constant alpha channel
    rgba = cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)
    gray16 = gray.astype(np.uint16) * 257 + np.arange(gray.shape[1], dtype=np.uint16)
    return {
        "rgb8": (rgb, "RGB"),
        "bgr8": (bgr, "BGR"),
        "rgba8": (rgba, "RGBA"),
        "bgra8": (bgra, "BGRA"),
        "mono8": (gray[..., None], "MONO"),
        "8UC1": (gray[..., None], "MONO"),
        "8UC3": (bgr, "BGR"),
        "8UC4": (bgra, "BGRA"),
        "mono16": (gray16[..., None], "MONO"),
        "16UC1": (gray16[..., None], "MONO"),
        "rgb16": (rgb.astype(np.uint16) * 257, "RGB"),
        "bgra16": (bgra.astype(np.uint16) * 255, "BGRA"),
    }


LAYOUTS = _layouts()


@pytest.mark.parametrize("padding", ROW_PADDINGS)
@pytest.mark.parametrize("encoding", sorted(LAYOUTS))
def test_raw_encodings_decode_to_the_stored_pixels(encoding: str, padding: int) -> None:
    expected, order = LAYOUTS[encoding]
    stored = expected.astype(expected.dtype.newbyteorder("<"))
    data, step = _raw_rows(stored, padding)
    height, width = expected.shape[:2]

    decoded = decode_image(data, height, width, encoding, step, False)

    assert decoded.channel_order == order
    assert decoded.pixels.shape == expected.shape
    assert decoded.pixels.dtype == expected.dtype
    assert (decoded.height, decoded.width) == (height, width)
    np.testing.assert_array_equal(decoded.pixels, expected)


@pytest.mark.parametrize("padding", ROW_PADDINGS)
def test_padded_rows_are_viewed_in_place_without_copy(padding: int) -> None:
    expected, _ = LAYOUTS["rgb8"]
    data, step = _raw_rows(expected, padding)
    buffer = bytearray(data)
    height, width = expected.shape[:2]

    decoded = decode_image(buffer, height, width, "rgb8", step, False)

    assert np.shares_memory(decoded.pixels, np.frombuffer(buffer, np.uint8))
    assert decoded.pixels.strides == (step, 3, 1)
    buffer[0] ^= 0xFF  # the view follows the message buffer: it is not a copy
    assert decoded.pixels[0, 0, 0] == expected[0, 0, 0] ^ 0xFF


def test_decoded_pixels_are_read_only_so_the_message_is_never_altered() -> None:
    expected, _ = LAYOUTS["bgr8"]
    data, step = _raw_rows(expected, 4)
    decoded = decode_image(bytearray(data), *expected.shape[:2], "bgr8", step, False)
    with pytest.raises(ValueError):
        decoded.pixels[0, 0, 0] = 1


def test_channel_orders_name_the_real_colours() -> None:
    bgr = _bgr("coffee.png")
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    height, width = bgr.shape[:2]
    as_rgb = decode_image(rgb.tobytes(), height, width, "rgb8", width * 3, False)
    as_bgr = decode_image(bgr.tobytes(), height, width, "bgr8", width * 3, False)
    np.testing.assert_array_equal(as_rgb.pixels[..., ::-1], as_bgr.pixels)
    assert (as_rgb.channel_order, as_bgr.channel_order) == ("RGB", "BGR")


@pytest.mark.parametrize("padding", ROW_PADDINGS)
def test_big_endian_mono16_is_swapped_to_host_order(padding: int) -> None:
    expected, _ = LAYOUTS["mono16"]
    data, step = _raw_rows(expected.astype(">u2"), padding)
    height, width = expected.shape[:2]

    decoded = decode_image(data, height, width, "mono16", step, True)

    assert decoded.pixels.dtype == np.dtype(np.uint16)
    assert decoded.pixels.dtype.isnative
    np.testing.assert_array_equal(decoded.pixels, expected)


def test_host_order_mono16_is_not_copied_and_foreign_order_is() -> None:
    expected, _ = LAYOUTS["mono16"]
    height, width = expected.shape[:2]
    little = bytearray(expected.astype("<u2").tobytes())
    big = bytearray(expected.astype(">u2").tobytes())

    from_little = decode_image(little, height, width, "mono16", width * 2, False)
    from_big = decode_image(big, height, width, "mono16", width * 2, True)

    host_is_little = sys.byteorder == "little"
    native, foreign = (from_little, from_big) if host_is_little else (from_big, from_little)
    native_buffer, foreign_buffer = (little, big) if host_is_little else (big, little)
    assert np.shares_memory(native.pixels, np.frombuffer(native_buffer, np.uint8))
    assert not np.shares_memory(foreign.pixels, np.frombuffer(foreign_buffer, np.uint8))
    np.testing.assert_array_equal(native.pixels, foreign.pixels)


@pytest.mark.parametrize(
    "as_buffer",
    [
        bytes,
        bytearray,
        memoryview,
        lambda data: array.array("B", data),
        lambda data: np.frombuffer(data, np.uint8),
    ],
    ids=["bytes", "bytearray", "memoryview", "array.array", "ndarray"],
)
def test_every_kind_of_message_buffer_is_accepted(as_buffer: Callable[[bytes], Any]) -> None:
    expected, _ = LAYOUTS["bgra8"]
    data, step = _raw_rows(expected, 3)
    height, width = expected.shape[:2]
    decoded = decode_image(as_buffer(data), height, width, "bgra8", step, False)
    np.testing.assert_array_equal(decoded.pixels, expected)


@pytest.mark.parametrize("encoding", ["rgb8", "bgra8", "mono8", "mono16", "rgb16"])
def test_encode_then_decode_round_trips(encoding: str) -> None:
    expected, order = LAYOUTS[encoding]
    pixels = expected[..., 0] if expected.shape[2] == 1 else expected

    raw = encode_image(pixels, encoding)
    decoded = decode_image(
        raw.data, raw.height, raw.width, raw.encoding, raw.step, raw.is_bigendian
    )

    assert raw.data.dtype == np.uint8 and raw.data.ndim == 1 and raw.data.flags.c_contiguous
    assert raw.step == expected.shape[1] * expected.shape[2] * expected.dtype.itemsize
    assert decoded.channel_order == order
    np.testing.assert_array_equal(decoded.pixels, expected)


def test_encode_copies_only_strided_arrays() -> None:
    labels = cv2.imread(str(IMAGES / "page.png"), cv2.IMREAD_GRAYSCALE)
    packed = encode_image(labels, "mono8")
    assert np.shares_memory(packed.data, labels)
    strided = encode_image(labels[:, ::2], "mono8")
    assert not np.shares_memory(strided.data, labels)
    np.testing.assert_array_equal(strided.data.reshape(labels.shape[0], -1), labels[:, ::2])


@pytest.mark.parametrize(
    ("pixels", "encoding", "problem"),
    [
        (np.zeros((4, 5), np.uint16), "mono8", "uint16"),
        (np.zeros((4, 5, 3), np.uint8), "mono8", "HxWx1"),
        (np.zeros((4, 5), np.uint8), "rgb8", "HxWx3"),
        (np.zeros((4, 5, 3), np.float32), "rgb8", "float32"),
        (np.zeros((0, 5), np.uint8), "mono8", "zero size"),
        (np.zeros((4, 5), np.uint8), "yuv422", "unknown image encoding 'yuv422'"),
    ],
)
def test_encode_rejects_arrays_that_do_not_fit_the_encoding(
    pixels: np.ndarray, encoding: str, problem: str
) -> None:
    with pytest.raises(ImageDecodeError, match=problem):
        encode_image(pixels, encoding)


def _good_rgb8() -> tuple[bytes, int, int, int]:
    expected, _ = LAYOUTS["rgb8"]
    data, step = _raw_rows(expected, 2)
    return data, expected.shape[0], expected.shape[1], step


def test_unknown_encoding_is_named() -> None:
    data, height, width, step = _good_rgb8()
    with pytest.raises(ImageDecodeError, match="unknown image encoding '32FC1'"):
        decode_image(data, height, width, "32FC1", step, False)


@pytest.mark.parametrize(("height", "width"), [(0, 10), (10, 0), (0, 0)])
def test_zero_size_is_rejected(height: int, width: int) -> None:
    with pytest.raises(ImageDecodeError, match="zero size"):
        decode_image(b"", height, width, "mono8", width, False)


def test_step_shorter_than_a_row_is_rejected() -> None:
    data, height, width, _ = _good_rgb8()
    with pytest.raises(ImageDecodeError, match=f"step {width * 3 - 1} is shorter than one row"):
        decode_image(data, height, width, "rgb8", width * 3 - 1, False)
    with pytest.raises(ImageDecodeError, match="shorter than one row"):
        decode_image(b"\0" * 100, 10, 5, "mono16", 9, False)


def test_truncated_data_is_rejected() -> None:
    data, height, width, step = _good_rgb8()
    with pytest.raises(ImageDecodeError, match=f"truncated: {len(data) - 1} bytes"):
        decode_image(data[:-1], height, width, "rgb8", step, False)
    with pytest.raises(ImageDecodeError, match="truncated: 0 bytes"):
        decode_image(b"", height, width, "rgb8", step, False)


def test_data_longer_than_step_times_height_is_rejected() -> None:
    data, height, width, step = _good_rgb8()
    with pytest.raises(ImageDecodeError, match="more than step"):
        decode_image(data + b"\0", height, width, "rgb8", step, False)


def test_non_byte_array_data_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="C-contiguous uint8"):
        decode_image(np.zeros(12, np.uint16), 2, 3, "mono8", 3, False)
    with pytest.raises(ImageDecodeError, match="not a byte buffer"):
        decode_image([1, 2, 3], 1, 3, "mono8", 3, False)  # type: ignore[arg-type]


# --- compressed images ------------------------------------------------------------------------


def test_jpeg_file_decodes_like_opencv_reads_it() -> None:
    data = (IMAGES / "quokka.jpg").read_bytes()
    decoded = decode_compressed(data, "jpeg")
    assert decoded.channel_order == "BGR"
    np.testing.assert_array_equal(decoded.pixels, cv2.imread(str(IMAGES / "quokka.jpg")))


@pytest.mark.parametrize(
    ("name", "format_string", "order", "read_flag"),
    [
        ("astronaut.png", "rgb8; png compressed bgr8", "BGR", cv2.IMREAD_COLOR),
        ("astronaut.png", "png", "BGR", cv2.IMREAD_COLOR),
        ("page.png", "mono8; png compressed mono8", "MONO", cv2.IMREAD_GRAYSCALE),
        ("page.png", "png", "MONO", cv2.IMREAD_GRAYSCALE),
    ],
)
def test_png_files_decode_with_the_declared_channel_order(
    name: str, format_string: str, order: str, read_flag: int
) -> None:
    decoded = decode_compressed((IMAGES / name).read_bytes(), format_string)
    assert decoded.channel_order == order
    expected = cv2.imread(str(IMAGES / name), read_flag)
    np.testing.assert_array_equal(decoded.pixels.reshape(expected.shape), expected)


def test_format_naming_rgb_inside_the_codec_is_honoured() -> None:
    rgb = cv2.cvtColor(_bgr("coffee.png"), cv2.COLOR_BGR2RGB)
    ok, encoded = cv2.imencode(".png", rgb)  # the codec stores the RGB bytes as given
    assert ok
    decoded = decode_compressed(encoded.tobytes(), "rgb8; png compressed rgb8")
    assert decoded.channel_order == "RGB"
    np.testing.assert_array_equal(decoded.pixels, rgb)


def test_sixteen_bit_png_decodes_to_uint16() -> None:
    expected = LAYOUTS["mono16"][0][..., 0]
    ok, encoded = cv2.imencode(".png", expected)
    assert ok
    decoded = decode_compressed(encoded, "mono16; png compressed mono16")
    assert decoded.pixels.dtype == np.uint16 and decoded.channel_order == "MONO"
    np.testing.assert_array_equal(decoded.pixels[..., 0], expected)


def test_jpeg_from_a_camera_buffer_decodes() -> None:
    bgr = _bgr("motorcycle_left.png")
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    decoded = decode_compressed(array.array("B", encoded.tobytes()), "bgr8; jpeg compressed bgr8")
    assert decoded.pixels.shape == bgr.shape and decoded.channel_order == "BGR"
    # lossy codec: close to the source photo, not equal
    assert np.abs(decoded.pixels.astype(np.int16) - bgr).mean() < 3.0


def test_truncated_jpeg_is_rejected_instead_of_grey_filled() -> None:
    data = (IMAGES / "quokka.jpg").read_bytes()
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_compressed(data[: len(data) // 2], "jpeg")


def test_corrupt_jpeg_is_rejected() -> None:
    data = bytearray((IMAGES / "quokka.jpg").read_bytes())
    data[3 : len(data) // 2] = bytes(len(data) // 2 - 3)  # headers and tables wiped, markers kept
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_compressed(bytes(data), "jpeg")


def test_truncated_png_is_rejected() -> None:
    data = (IMAGES / "page.png").read_bytes()
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_compressed(data[: len(data) // 2], "png")


@pytest.mark.parametrize(
    ("data_name", "format_string", "problem"),
    [
        ("page.png", "jpeg", "does not start with the jpeg signature"),
        ("quokka.jpg", "png", "does not start with the png signature"),
        ("quokka.jpg", "tiff", "unsupported compressed image format 'tiff'"),
        ("quokka.jpg", "16UC1; compressedDepth png", "unsupported compressed image format"),
        ("quokka.jpg", "bgr8; jpeg compressed yuv422", "known encoding"),
        ("page.png", "bgr8; png compressed bgr8", "decoded to 1 channels of uint8"),
        ("astronaut.png", "mono16; png compressed mono16", "declares 1 of uint16"),
    ],
)
def test_compressed_format_problems_are_named(
    data_name: str, format_string: str, problem: str
) -> None:
    with pytest.raises(ImageDecodeError, match=problem):
        decode_compressed((IMAGES / data_name).read_bytes(), format_string)


def test_empty_compressed_data_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_compressed(b"", "jpeg")


def _png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` zeros, compressed to a few hundred KB at most
    (built with zlib, not with the code under test)."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_raw_image_over_max_pixels_is_rejected_before_its_data_is_read() -> None:
    with pytest.raises(ImageTooLargeError, match="30000x30000 = 900000000 pixels, more than max_pixels 40000000"):
        decode_image(b"", 30000, 30000, "mono8", 30000, False)
    pixels = LAYOUTS["rgb8"][0]
    limit = pixels.shape[0] * pixels.shape[1]
    data, step = _raw_rows(pixels, 0)
    assert decode_image(data, pixels.shape[0], pixels.shape[1], "rgb8", step, False, max_pixels=limit).width == 131
    with pytest.raises(ImageTooLargeError, match=f"more than max_pixels {limit - 1}"):
        decode_image(data, pixels.shape[0], pixels.shape[1], "rgb8", step, False, max_pixels=limit - 1)


@pytest.mark.parametrize(("name", "codec"), [("quokka.jpg", "jpeg"), ("page.png", "png")])
def test_compressed_size_comes_from_the_header_and_is_checked_before_decoding(name: str, codec: str) -> None:
    data = (IMAGES / name).read_bytes()
    height, width = cv2.imread(str(IMAGES / name), cv2.IMREAD_UNCHANGED).shape[:2]
    assert compressed_frame_size(data, codec) == (width, height)
    assert decode_compressed(data, codec, max_pixels=width * height).width == width
    with pytest.raises(ImageTooLargeError, match=f"{width}x{height}"):
        decode_compressed(data, codec, max_pixels=width * height - 1)


def test_png_bomb_is_refused_without_decoding_under_a_memory_cap() -> None:
    # 30000 x 30000 pixels in ~100 KB: decoding it takes 900 MB and more. A child process with its
    # address space capped at 1 GiB more than it needs at start must refuse it with the default limit.
    bomb = _png_bomb(30000, 30000)
    assert len(bomb) < 200_000
    assert cv2.imdecode(np.frombuffer(bomb[:4096], np.uint8), cv2.IMREAD_UNCHANGED) is None  # not decoded here
    script = (
        "import resource, sys\n"
        "from trt_perception.errors import ImageDecodeError\n"
        "from trt_perception.image_decoding import decode_compressed\n"
        "usage = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (usage + 2**30, usage + 2**30))\n"
        "data = sys.stdin.buffer.read()\n"
        "try:\n"
        "    decode_compressed(data, 'png')\n"
        "except ImageDecodeError as error:\n"
        "    print(error)\n"
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", script], input=bomb, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert "30000x30000 = 900000000 pixels, more than max_pixels" in result.stdout.decode()


def test_jpeg_with_bytes_after_its_end_marker_decodes_like_without() -> None:
    data = (IMAGES / "quokka.jpg").read_bytes()
    expected = decode_compressed(data, "jpeg").pixels
    for trailer in (b"\0" * 200, b"camera metadata " * 20, b"\xff\xd8\xff\xe1 fake second image"):
        np.testing.assert_array_equal(decode_compressed(data + trailer, "jpeg").pixels, expected)


def _jpeg_with_two_frame_headers(width: int, height: int) -> bytes:
    """quokka.jpg with its frame header (SOF0) claiming ``width`` x ``height``, and the true one
    added again after the scan: a small message whose last SOF looks harmless."""
    data = (IMAGES / "quokka.jpg").read_bytes()
    start = data.index(b"\xff\xc0")
    length = int.from_bytes(data[start + 2 : start + 4], "big")
    true_header = data[start : start + 2 + length]
    claimed = true_header[:5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + true_header[9:]
    end = data.rindex(b"\xff\xd9")
    return data[:start] + claimed + data[start + 2 + length : end] + true_header + data[end:]


def test_jpeg_whose_first_frame_header_claims_more_pixels_is_refused() -> None:
    # libjpeg sizes the image from the first SOF (simplejpeg, libjpeg-turbo's reader, says so); a
    # later one must not pass the max_pixels check in its place.
    import simplejpeg

    bomb = _jpeg_with_two_frame_headers(16000, 16000)
    assert simplejpeg.decode_jpeg_header(bomb)[:2] == (16000, 16000)
    with pytest.raises(ImageDecodeError, match="two frame headers"):
        compressed_frame_size(bomb, "jpeg")
    with pytest.raises(ImageDecodeError, match="two frame headers"):
        decode_compressed(bomb, "jpeg")


def test_jpeg_cut_anywhere_is_rejected_as_truncated() -> None:
    data = (IMAGES / "quokka.jpg").read_bytes()
    for end in (3, 20, len(data) // 3, len(data) - 2, len(data) - 1):
        with pytest.raises(ImageDecodeError, match="truncated"):
            decode_compressed(data[:end], "jpeg")


def test_jpeg_that_libjpeg_reports_corrupt_is_rejected_not_grey_filled() -> None:
    # Cut in half with the end-of-image marker put back: the marker structure is intact, but libjpeg
    # warns "premature end of data segment" and OpenCV would answer with a half-grey image.
    data = (IMAGES / "quokka.jpg").read_bytes()
    cut = data[: len(data) // 2] + b"\xff\xd9"
    assert cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR) is not None  # what main answered
    with pytest.raises(ImageDecodeError, match="is corrupt: Corrupt JPEG data: premature end of data segment"):
        decode_compressed(cut, "jpeg")


def test_grey_jpeg_decodes_like_opencv() -> None:
    grey = cv2.cvtColor(_bgr("astronaut.png"), cv2.COLOR_BGR2GRAY)
    ok, encoded = cv2.imencode(".jpg", grey)
    assert ok
    decoded = decode_compressed(encoded.tobytes(), "jpeg")
    assert decoded.channel_order == "MONO"
    np.testing.assert_array_equal(decoded.pixels[..., 0], cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED))
