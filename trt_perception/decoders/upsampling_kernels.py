"""Compiled loops for ``decoders.upsampling`` (imported only when numba is installed).

Each loop finishes a bilinear upsample whose horizontal pass OpenCV has already made for source
rows ``first`` on: output row ``y`` blends source rows ``rows0[y]`` and ``rows1[y]`` (rows
``rows0[y] - first`` and ``rows1[y] - first`` of that pass) with weights ``weights0[y]`` and
``weights1[y]``, in float32, as a multiply, a multiply and an add (no fused multiply-add; numba
contracts nothing unless asked for fastmath), which is the arithmetic of OpenCV's own vertical pass
on x86. The blended values are reduced at once (compared with a cut, or an argmax over channels)
and never stored, so no full-size float map is written and read back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import numpy.typing as npt


def _compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` compiled by numba (releasing the GIL), its machine code cached on disk where
    numba finds a writable place: next to this file or in the user's cache folder. A read-only
    install run by a user without a writable home has neither; numba then refuses to cache, and
    the loop is compiled anew in each process instead."""
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


@_compiled
def _rows_to_blend(
    horizontal: npt.NDArray[np.float32],
    first: int,
    rows0: npt.NDArray[np.int32],
    rows1: npt.NDArray[np.int32],
    weights0: npt.NDArray[np.float32],
    weights1: npt.NDArray[np.float32],
    y: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], np.float32, np.float32]:
    """The two horizontal-pass rows output row ``y`` blends and their weights."""
    return horizontal[rows0[y] - first], horizontal[rows1[y] - first], weights0[y], weights1[y]


@_compiled
def threshold_rows(
    horizontal: npt.NDArray[np.float32],
    first: int,
    rows0: npt.NDArray[np.int32],
    rows1: npt.NDArray[np.int32],
    weights0: npt.NDArray[np.float32],
    weights1: npt.NDArray[np.float32],
    cut: np.float32,
    labels: npt.NDArray[np.bool_],
    start: int,
    stop: int,
) -> None:
    """``labels[y] = blend(y) > cut`` for output rows ``start..stop`` of an ``HxW`` map."""
    for y in range(start, stop):
        upper, lower, weight0, weight1 = _rows_to_blend(horizontal, first, rows0, rows1, weights0, weights1, y)
        out = labels[y]
        for x in range(labels.shape[1]):
            out[x] = upper[x] * weight0 + lower[x] * weight1 > cut


@_compiled
def argmax_rows(
    horizontal: npt.NDArray[np.float32],
    first: int,
    rows0: npt.NDArray[np.int32],
    rows1: npt.NDArray[np.int32],
    weights0: npt.NDArray[np.float32],
    weights1: npt.NDArray[np.float32],
    labels: npt.NDArray[np.unsignedinteger],
    start: int,
    stop: int,
) -> None:
    """``labels[y, x]`` = the first channel with the largest ``blend(y)[x, c]``, for output rows
    ``start..stop`` of an ``HxWxC`` map."""
    channels = horizontal.shape[2]
    for y in range(start, stop):
        upper, lower, weight0, weight1 = _rows_to_blend(horizontal, first, rows0, rows1, weights0, weights1, y)
        out = labels[y]
        for x in range(labels.shape[1]):
            best = upper[x, 0] * weight0 + lower[x, 0] * weight1
            index = 0
            for channel in range(1, channels):
                value = upper[x, channel] * weight0 + lower[x, channel] * weight1
                if value > best:
                    best = value
                    index = channel
            out[x] = index
