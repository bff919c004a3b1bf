"""Compiled loop for ``visualize.colorize`` (imported only when numba is installed): the colours of a
0/1 label map written in one pass, eight pixels (three 64-bit words) at a time, instead of OpenCV's
two or three passes over the colour image (a 0/255 mask, its expansion to three channels, the
colours' AND and XOR)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from trt_perception.compiled_loops import compiled

# Eight 0/1 label bytes read as one little-endian word, times this, hold their pattern in the top
# byte, the first pixel as its highest bit (no byte of the product carries into the next).
GATHER_LABEL_BITS = np.uint64(0x8040201008040201)
PATTERN_SHIFT = np.uint64(56)


@compiled
def colour_binary_rows(
    labels: npt.NDArray[np.uint8],
    words_by_pattern: npt.NDArray[np.uint64],
    colours: npt.NDArray[np.uint64],
    start: int,
    stop: int,
) -> None:
    """Rows ``start..stop`` of ``colours`` (each row's RGB bytes as ``3 * W / 8`` words) for the
    labels 0 and 1 of ``labels`` (``HxW``, W a multiple of 8, rows 8-byte aligned): the three words
    of each eight pixels are ``words_by_pattern[pattern]`` (256x3) of their labels' pattern."""
    for y in range(start, stop):
        row = labels[y].view(np.uint64)
        out = colours[y]
        for group in range(row.shape[0]):
            pattern = (row[group] * GATHER_LABEL_BITS) >> PATTERN_SHIFT
            out[3 * group] = words_by_pattern[pattern, 0]
            out[3 * group + 1] = words_by_pattern[pattern, 1]
            out[3 * group + 2] = words_by_pattern[pattern, 2]
