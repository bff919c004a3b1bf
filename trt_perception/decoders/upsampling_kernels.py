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

import numpy as np
import numpy.typing as npt

from trt_perception.compiled_loops import compiled


@compiled
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


@compiled
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


@compiled
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


@compiled
def threshold_rows_by_cells(
    scores: npt.NDArray[np.float32],
    rows0: npt.NDArray[np.int32],
    rows1: npt.NDArray[np.int32],
    weights0: npt.NDArray[np.float32],
    weights1: npt.NDArray[np.float32],
    columns0: npt.NDArray[np.int32],
    columns1: npt.NDArray[np.int32],
    column_weights0: npt.NDArray[np.float32],
    column_weights1: npt.NDArray[np.float32],
    run_starts: npt.NDArray[np.int64],
    first_run_from: npt.NDArray[np.int64],
    last_run_to: npt.NDArray[np.int64],
    cut: np.float32,
    margin: np.float32,
    max_blended_share: float,
    labels: npt.NDArray[np.uint8],
    start: int,
    stop: int,
) -> int:
    """``labels[y] = (blend(y) > cut)`` (0/1) for output rows ``start..stop``, blending only where
    the answer is in doubt. The output columns fall into runs that sample the same two source
    columns (``run_starts``: each run's first output column, then the width); with an output row's
    two source rows they make a cell of four scores. Where all four lie more than ``margin`` above
    the cut (below it), every blend inside the cell does too, so the run is filled with 1 (0);
    elsewhere each pixel is blended as OpenCV does, horizontal pass included, in float32 without
    fused multiply-adds.

    The filled runs are found per source row pair from the stretches of source columns whose two
    scores lie on one side: the runs inside a stretch (``first_run_from[a]``: the first run whose
    columns start at ``a`` or later; ``last_run_to[b]``: the last whose columns end at ``b`` or
    earlier) are filled, and a run across the end of a stretch is blended. A stretch is scanned
    eight columns at a time where it is long.

    Returns the first row not written: ``stop``, or an earlier row once more than
    ``max_blended_share`` of the pixels written so far needed the blend (a map without large
    uniform areas, for which ``threshold_rows`` after OpenCV's horizontal pass is faster)."""
    width = labels.shape[1]
    source_columns = scores.shape[1]
    both = np.empty(source_columns, np.uint8)  # per source column: 1 both rows above, 2 both below
    words = both[: 8 * (source_columns // 8)].view(np.uint64)  # ``both`` eight columns at a time
    # at most two spans per stretch (a blend gap, a fill) and a last blend span; the starts end with the width
    span_start = np.empty(2 * source_columns + 2, np.int64)
    span_class = np.empty(2 * source_columns + 1, np.uint8)  # 0: blend, 1: all above, 2: all below
    spans = 0
    high = cut + margin
    low = cut - margin
    previous0 = -1
    previous1 = -1
    blended = 0
    for y in range(start, stop):
        r0 = rows0[y]
        r1 = rows1[y]
        upper = scores[r0]
        lower = scores[r1]
        if r0 != previous0 or r1 != previous1:
            if blended > max_blended_share * (y - start) * width + 4 * width:
                return y
            previous0 = r0
            previous1 = r1
            for column in range(source_columns):
                u = upper[column]
                v = lower[column]
                both[column] = np.uint8((u > high) & (v > high)) | (np.uint8((u < low) & (v < low)) << np.uint8(1))
            spans = 0
            filled_to = 0  # output columns before this are in a span
            column = 0
            while column < source_columns:
                kind = both[column]
                end = column
                pattern = np.uint64(kind) * np.uint64(0x0101010101010101)
                while end + 1 < source_columns and both[end + 1] == kind:
                    end += 1
                    if (end + 1) % 8 == 0:  # at a word's start: skip whole words of this kind
                        word = (end + 1) // 8
                        while word < words.shape[0] and words[word] == pattern:
                            end += 8
                            word += 1
                if kind != 0:
                    first_run = first_run_from[column]
                    last_run = last_run_to[end]
                    if first_run <= last_run:
                        first = run_starts[first_run]
                        if first > filled_to:
                            span_start[spans] = filled_to
                            span_class[spans] = 0
                            spans += 1
                        span_start[spans] = first
                        span_class[spans] = kind
                        spans += 1
                        filled_to = run_starts[last_run + 1]
                column = end + 1
            if filled_to < width:
                span_start[spans] = filled_to
                span_class[spans] = 0
                spans += 1
            span_start[spans] = width
        weight0 = weights0[y]
        weight1 = weights1[y]
        out = labels[y]
        for span in range(spans):
            kind = span_class[span]
            first = span_start[span]
            last = span_start[span + 1]
            if kind == 0:
                blended += last - first
                for x in range(first, last):
                    c0 = columns0[x]
                    c1 = columns1[x]
                    h0 = upper[c0] * column_weights0[x] + upper[c1] * column_weights1[x]
                    h1 = lower[c0] * column_weights0[x] + lower[c1] * column_weights1[x]
                    out[x] = h0 * weight0 + h1 * weight1 > cut
            else:
                out[first:last] = kind & np.uint8(1)
    return stop
