"""Score maps upsampled bilinearly and reduced to labels: a threshold or an argmax over channels.

Each function gives the labels of ``cv2.resize(scores, ..., INTER_LINEAR)`` (OpenCV's own
arithmetic, ``geometry.resize_map``) followed by ``> cut`` or ``argmax``, bit for bit on x86.
OpenCV resizes in two passes: a horizontal one over the source rows, then a vertical blend of two
of those rows per output row. With numba installed, OpenCV makes only the horizontal pass (a few
source rows wide, so small) and a compiled loop blends and reduces each output row at once
(``upsampling_kernels``): the full-size float map (8 MB per channel at 1080p) is never written
and read back. A threshold upsampled to at least CELLS_MIN_ROWS_PER_SOURCE_ROW output rows per
source row goes further: where the four source scores around a run of output pixels all clear the
cut by more than the blend's rounding can move them (``cell_margin``), the run is filled without
blending, and only the pixels beside the cut are blended (OpenCV's horizontal pass included).
Without numba the labels come from the full resize. The blend multiplies and adds
separately, as OpenCV's x86 code and the GPU kernels do; OpenCV's aarch64 code fuses that
multiply-add, so on a Jetson the compiled labels may differ from its ``cv2.resize`` where a score
lies within a float32 step of the cut (not measured: no ARM machine here).
"""

from __future__ import annotations

import math
import threading
from functools import cache, lru_cache
from types import ModuleType
from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.compiled_loops import import_kernels
from trt_perception.geometry import resize_map
from trt_perception.gpu.resize_tables import LinearTaps, linear_taps
from trt_perception.row_bands import run_in_bands

# cv2.resize handles at most this many channels per call (CV_CN_MAX: 128 in OpenCV 5, 512 in 4.x).
MAX_RESIZE_CHANNELS = 128
# Row bands, by the bytes of the full-size float map (whether or not it is written). The full
# resize's threshold only streams memory, so it is banded when at least THRESHOLD_MIN_BANDS cores
# take part (on the 2-core development VM two bands were slower). The compiled blend makes each
# band's horizontal pass in that band, so two bands pay: on the VM 0.23-0.33 against 0.31 ms in
# one piece at 1080p (the full resize 0.47); on the H200 host's 16 cores (low single-core memory
# bandwidth) four bands took 0.47-0.48 ms at 1080p against 0.61 in one piece and 0.52-0.57 for
# the full resize, and at 640x480 (below the byte threshold) the blend took 0.20-0.26 ms, OpenCV's
# resize on its 16 threads 0.16-0.18. An argmax computes per channel: on the H200 host four bands
# were about 3x faster than one piece (19 classes to 1080p: 19 against 56-64 ms; the full resize
# took 138-177 ms).
BANDED_THRESHOLD_MIN_BYTES = 4 << 20
THRESHOLD_MIN_BANDS = 3
BLEND_MIN_BANDS = 2
BANDED_ARGMAX_MIN_BYTES = 4 << 20
# The cell loop (``upsampling_kernels.threshold_rows_by_cells``) serves outputs with at least this
# many rows per source row (the blend the others: a map whose width stays and whose rows shrink).
# Measured with the selfie model's 256x256 maps of four fixture photos (back to back also the
# benchmark's frame), cells against blend (OpenCV's horizontal pass, then ``threshold_rows``), ms:
# - dev VM, a node's frame (64 MB of other memory written and a 20 ms pause before each call):
#   0.150 against 0.222 at 1.17 rows per source row, 0.164 against 0.287 at 640x480 (1.88).
# - dev VM, back to back, one OpenCV thread (the nodes' setting): 0.028 against 0.065 at 1.17,
#   0.033-0.043 against 0.108 at 640x480; OpenCV's two threads: the blend 0.070 at 640x480.
# - H200 host (16 slower cores): a node's frame 0.208 against 0.359 at 1.17, 0.241 against 0.402
#   at 640x480, 0.287 against 0.569 at 720p; back to back at 640x480 0.063-0.075 against
#   0.167-0.173 on one OpenCV thread, 0.113-0.139 against 0.235-0.239 on sixteen.
# It hands the rest of its rows to the blend once more than CELLS_MAX_BLENDED_SHARE of the pixels
# needed blending (a noise-like map, blended pixel by pixel, is faster through OpenCV's pass).
CELLS_MIN_ROWS_PER_SOURCE_ROW = 1.0
CELLS_MAX_BLENDED_SHARE = 0.05
# The most scratch memory one thread keeps for horizontal passes (about 2 MB for the selfie map at
# 1080p; larger passes get a fresh array per call).
SCRATCH_MAX_BYTES = 16 << 20


@cache
def compiled_kernels() -> ModuleType | None:
    """``upsampling_kernels`` when numba can be imported, else None (the full-resize path; said
    once in the log, with numba's reason, e.g. a numpy newer than it supports)."""
    return import_kernels(
        "trt_perception.decoders.upsampling_kernels", __name__,
        "bilinear upsampling before a threshold or an argmax runs as a full OpenCV resize (the same labels, slower; "
        "pip install numba)",
    )


def prepare(label_type: type[np.unsignedinteger] | None = None) -> None:
    """Compile (or load from numba's on-disk cache) the blend for a threshold, or for an argmax into
    ``label_type`` labels, now rather than at the first frame (numba's import and a first
    compilation take a few hundred milliseconds); nothing without numba."""
    if compiled_kernels() is None:
        return
    ramp = np.arange(4, dtype=np.float32).reshape(2, 2)
    if label_type is None:
        threshold_resized(np.arange(8, dtype=np.float32).reshape(4, 2), (3, 2), 1.5)  # the blend (fewer rows)
        threshold_resized(ramp, (6, 2), 1.5)  # the cell loop
    else:
        argmax_resized(np.stack([ramp, ramp[::-1]], axis=2), (3, 2), label_type)


def threshold_resized(
    scores: npt.NDArray[np.float32], size: tuple[int, int], cut: float, score_range: tuple[float, float] | None = None
) -> npt.NDArray[np.uint8]:
    """``(resize_map(scores, size, INTER_LINEAR) > cut)`` as 0/1 uint8 labels for an ``HxW`` float32
    map; ``cut`` is compared in float32, as numpy compares a float32 array with a Python float.

    The compiled blend serves maps that ``_blend_saves_work``; for the others its horizontal pass
    alone writes as many floats as the full resize does (measured: PP-OCR's 736x992 map to 640x480
    took 0.18 ms blended against 0.14 ms resized). ``score_range``: the map's (min, max) where the
    caller has it already, so the cell loop's ``cell_margin`` need not scan the map again."""
    height, width = size
    labels = np.empty(size, np.bool_)
    full_bytes = height * width * 4
    kernels = compiled_kernels()
    source = (scores.shape[0], scores.shape[1])
    if (
        source == size or kernels is None or opencv_takes_area_path(source, size)
        or not _blend_saves_work(source, size)
    ):
        # OpenCV's resize copies a map of the output's size: it is compared as it is
        resized = scores if source == size else resize_map(scores, size, cv2.INTER_LINEAR)

        def threshold_rows(start: int, stop: int) -> None:
            np.greater(resized[start:stop], cut, out=labels[start:stop])

        run_in_bands(threshold_rows, height, full_bytes, BANDED_THRESHOLD_MIN_BYTES, THRESHOLD_MIN_BANDS)
        return labels.view(np.uint8)
    taps = _row_taps(scores.shape[0], height)
    cut32 = np.float32(cut)
    by_cells = height >= CELLS_MIN_ROWS_PER_SOURCE_ROW * scores.shape[0]
    if by_cells:
        cell_scores = _kernel_input(scores)
        runs = _column_runs(scores.shape[1], width)
        margin = cell_margin(cell_scores, cut32, score_range)

    def blend_rows(start: int, stop: int) -> None:
        if by_cells:
            columns = runs.taps
            start = kernels.threshold_rows_by_cells(
                cell_scores, taps.index0, taps.index1, taps.weight0, taps.weight1, columns.index0, columns.index1,
                columns.weight0, columns.weight1, runs.starts, runs.first_run_from, runs.last_run_to, cut32, margin,
                CELLS_MAX_BLENDED_SHARE, labels.view(np.uint8), start, stop,
            )
            if start == stop:
                return
        first, horizontal = _horizontal_pass_for(scores, taps, width, start, stop)
        kernels.threshold_rows(horizontal, first, taps.index0, taps.index1, taps.weight0, taps.weight1, cut32, labels, start, stop)

    run_in_bands(blend_rows, height, full_bytes, BANDED_THRESHOLD_MIN_BYTES, BLEND_MIN_BANDS)
    return labels.view(np.uint8)


def argmax_resized(
    scores: npt.NDArray[np.float32], size: tuple[int, int], dtype: type[np.unsignedinteger]
) -> npt.NDArray[np.unsignedinteger]:
    """``np.argmax(resize_map(scores, size, INTER_LINEAR), axis=2)`` as ``dtype`` labels for finite
    ``HxWxC`` float32 scores (ties: the first channel), for any number of channels."""
    height, width = size
    channels = scores.shape[2]
    full_bytes = height * width * channels * 4
    kernels = compiled_kernels()
    source = (scores.shape[0], scores.shape[1])
    if kernels is None or source == size or opencv_takes_area_path(source, size):
        return _argmax_of_full_resize(scores, size).astype(dtype)
    taps = _row_taps(scores.shape[0], height)
    labels = np.empty(size, dtype)

    def blend_rows(start: int, stop: int) -> None:
        first, horizontal = _horizontal_pass_for(scores, taps, width, start, stop)
        kernels.argmax_rows(horizontal, first, taps.index0, taps.index1, taps.weight0, taps.weight1, labels, start, stop)

    run_in_bands(blend_rows, height, full_bytes, BANDED_ARGMAX_MIN_BYTES)
    return labels


def opencv_takes_area_path(source: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether ``cv2.resize`` runs INTER_LINEAR as its INTER_AREA shortcut: a map exactly twice the
    output's size in both directions (the four pixels summed, then times 0.25, which rounds unlike
    the bilinear blend)."""
    return source == (2 * size[0], 2 * size[1])


def _blend_saves_work(source: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether the horizontal pass (none when the width stays) has fewer rows than the output."""
    return source[1] == size[1] or source[0] < size[0]


def _horizontal_pass_for(
    scores: npt.NDArray[np.float32], taps: LinearTaps, width: int, start: int, stop: int
) -> tuple[int, npt.NDArray[np.float32]]:
    """``(first, horizontal)``: OpenCV's horizontal pass of a resize to ``width`` columns over the
    source rows that output rows ``start..stop`` blend, from row ``first`` on; ``HxWxC`` (``HxW``
    for one channel). A resize that keeps the height blends each row with weight 1 and its
    neighbour with weight 0, which leaves the horizontal pass's values as they are. Written into
    this thread's scratch memory: a fresh multi-megabyte array per frame would cost page faults
    (glibc hands such blocks back to the OS when they are freed, unless the process tuned malloc
    as the nodes do: 1.0 against 0.29 ms per 1080p selfie frame on the dev VM)."""
    first, last = int(taps.index0[start]), int(taps.index1[stop - 1]) + 1
    rows = _kernel_input(scores[first:last])
    if rows.shape[1] == width:
        return first, rows
    size = (last - first, width)
    if scores.ndim == 2 or scores.shape[2] <= MAX_RESIZE_CHANNELS:
        return first, resize_map(rows, size, cv2.INTER_LINEAR, out=_scratch((*size, *scores.shape[2:])))
    groups = [
        resize_map(np.ascontiguousarray(rows[:, :, group]), size, cv2.INTER_LINEAR)
        for group in resize_channel_groups(scores.shape[2])
    ]
    return first, np.concatenate([group.reshape(*size, -1) for group in groups], axis=2)


def resize_channel_groups(channels: int) -> list[slice]:
    """The channels resized together, one ``cv2.resize`` call per group (OpenCV takes at most
    MAX_RESIZE_CHANNELS at once; how it rounds can depend on a group's channel count)."""
    return [slice(start, min(start + MAX_RESIZE_CHANNELS, channels)) for start in range(0, channels, MAX_RESIZE_CHANNELS)]


def _kernel_input(array: npt.NDArray) -> npt.NDArray[np.float32]:
    """``array`` as the compiled loops were compiled for it: float32, C-contiguous and writable (a
    read-only array would make numba compile another version at the first frame); copied only
    when it is not so already."""
    if array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable:
        return array
    return np.array(array, np.float32, order="C")


_thread_scratch = threading.local()


def _scratch(shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """A float32 array of ``shape`` in memory this thread reuses from call to call (a fresh array
    above SCRATCH_MAX_BYTES, so that no thread keeps more than that)."""
    count = math.prod(shape)
    if count * 4 > SCRATCH_MAX_BYTES:
        return np.empty(shape, np.float32)
    buffer = getattr(_thread_scratch, "buffer", None)
    if buffer is None or buffer.size < count:
        buffer = _thread_scratch.buffer = np.empty(count, np.float32)
    return buffer[:count].reshape(shape)


def cell_margin(
    scores: npt.NDArray[np.float32], cut: np.float32, score_range: tuple[float, float] | None = None
) -> np.float32:
    """How far beyond the cut the four scores of a cell must all lie for every blend between them to
    fall on their side too. The float32 blend (two products and a sum across, then down; weights
    summing to 1 within 2**-24) of scores no larger than M in magnitude is within 5.02 * 2**-24 * M of
    their exact weighted mean, which lies between the four; the margin is 2**-20 of the largest
    magnitude in the map or the cut (over three times that bound), plus 2**-100 for scores so small
    that their products lose precision. ``score_range``: the scores' (min, max) when the caller has
    it already (or that of a map they were cut from: a wider range only widens the margin)."""
    low, high = cv2.minMaxLoc(scores)[:2] if score_range is None else score_range
    return np.float32(max(-low, high, abs(float(cut))) * 2.0**-20 + 2.0**-100)


class ColumnRuns(NamedTuple):
    """OpenCV's column taps of a resize, grouped into runs of output columns that sample the same two
    source columns: ``starts`` (each run's first output column, then the output width),
    ``first_run_from[a]`` (the first run whose source columns start at ``a`` or later; the run
    count when none) and ``last_run_to[b]`` (the last run whose source columns end at ``b`` or
    earlier; -1 when none)."""

    taps: LinearTaps
    starts: npt.NDArray[np.int64]
    first_run_from: npt.NDArray[np.int64]
    last_run_to: npt.NDArray[np.int64]


@lru_cache(maxsize=32)
def _column_runs(source_columns: int, output_columns: int) -> ColumnRuns:
    """The column runs of a resize from ``source_columns`` to ``output_columns`` (read-only, shared)."""
    taps = linear_taps(source_columns, output_columns, clamp_to_edge=True)
    changes = np.flatnonzero((np.diff(taps.index0) != 0) | (np.diff(taps.index1) != 0)) + 1
    firsts = np.concatenate([[0], changes]).astype(np.int64)
    columns = np.arange(source_columns)
    runs = ColumnRuns(
        taps,
        np.append(firsts, output_columns).astype(np.int64),
        np.searchsorted(taps.index0[firsts], columns, side="left").astype(np.int64),
        (np.searchsorted(taps.index1[firsts], columns, side="right") - 1).astype(np.int64),
    )
    for table in (*_tables(taps), *runs[1:]):
        table.flags.writeable = False
    return runs


@lru_cache(maxsize=32)
def _row_taps(source_rows: int, output_rows: int) -> LinearTaps:
    """The rows and weights OpenCV's vertical pass blends for each output row (read-only, shared)."""
    taps = linear_taps(source_rows, output_rows, clamp_to_edge=False)
    for table in _tables(taps):
        table.flags.writeable = False
    return taps


def _tables(taps: LinearTaps) -> tuple[npt.NDArray, ...]:
    """Every array of ``taps``."""
    return (taps.index0, taps.index1, taps.weight0, taps.weight1, taps.fixed0, taps.fixed1)


def _argmax_of_full_resize(scores: npt.NDArray[np.float32], size: tuple[int, int]) -> npt.NDArray[np.intp]:
    """Argmax over channels of the full bilinear resize of ``HxWxC`` scores, resized in channel groups."""
    labels = np.zeros(size, dtype=np.intp)
    best = np.full(size, -np.inf, dtype=np.float32)
    for channels in resize_channel_groups(scores.shape[2]):
        group = np.ascontiguousarray(scores[:, :, channels], dtype=np.float32)
        resized = resize_map(group, size, cv2.INTER_LINEAR).reshape(*size, -1)
        group_labels = np.argmax(resized, axis=2)
        group_best = np.take_along_axis(resized, group_labels[:, :, None], axis=2)[:, :, 0]
        better = group_best > best
        labels[better] = group_labels[better] + channels.start
        best[better] = group_best[better]
    return labels
