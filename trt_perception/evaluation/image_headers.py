"""Image sizes read from file headers, without decoding: the formats OpenCV's ``imread`` reads from
files named anything (it picks its decoder by the data's signature, so the check does too)."""

from __future__ import annotations

import re
from typing import Literal

from trt_perception.image_decoding import compressed_frame_size, sniff_codec

# Netpbm header: magic P1..P6, then width and height, with '#' comments to the end of a line anywhere.
_PNM_HEADER = re.compile(rb"P[1-6](?:\s|#[^\n]*\n)+(\d+)(?:\s|#[^\n]*\n)+(\d+)")
_TIFF_BYTE_ORDERS: dict[bytes, Literal["little", "big"]] = {b"II*\x00": "little", b"MM\x00*": "big"}
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a BMP's info header (OS/2 16-bit sizes or Windows 32-bit, height negative
    for top-down rows)."""
    if len(data) < 26:
        return None
    if int.from_bytes(data[14:18], "little") == 12:
        return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
    width = int.from_bytes(data[18:22], "little", signed=True)
    return abs(width), abs(int.from_bytes(data[22:26], "little", signed=True))


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first image file directory of a (classic, not Big-) TIFF."""
    order = _TIFF_BYTE_ORDERS[data[:4]]

    def number(start: int, size: int) -> int:
        return int.from_bytes(data[start : start + size], order)

    directory = number(4, 4)
    sizes = {}
    for entry in range(directory + 2, directory + 2 + 12 * number(directory, 2), 12):
        tag, kind = number(entry, 2), number(entry + 2, 2)
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT) and kind in (_TIFF_SHORT, _TIFF_LONG):
            sizes[tag] = number(entry + 8, 2 if kind == _TIFF_SHORT else 4)
    return (sizes[_TIFF_WIDTH], sizes[_TIFF_HEIGHT]) if len(sizes) == 2 else None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP's first chunk: lossy (VP8), lossless (VP8L) or extended (VP8X)."""
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return (int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def image_file_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header of png, jpeg, bmp, pgm/ppm/pbm, tiff or webp data, chosen by
    the data's signature (as OpenCV's imread chooses its decoder), not by the file name; None for other
    formats or a header too short to hold the size."""
    codec = sniff_codec(data)
    if codec is not None:
        return compressed_frame_size(data, codec)
    if data.startswith(b"BM"):
        return _bmp_size(data)
    if data[:4] in _TIFF_BYTE_ORDERS:
        return _tiff_size(data) if len(data) >= 8 else None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    match = _PNM_HEADER.match(data, 0, 4096)
    return (int(match.group(1)), int(match.group(2))) if match else None
