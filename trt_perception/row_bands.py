"""Row bands of one image processed on several cores at once.

OpenCV splits an operation over its threads only when the output has many pixels (``cv2.remap``
of a 256x256 network input runs on one core), and numpy's element-wise functions always run on
one. Per-pixel work whose rows are independent can run as horizontal bands in parallel instead:
the calling thread takes the first band and long-lived worker threads the others. Both OpenCV and
numpy release the GIL inside such calls. A hand-off costs tens of microseconds, so this pays only
for work of a few hundred microseconds or more. The "rows" may as well be the bytes of a flat
buffer (the GPU path's copy of a frame into page-locked memory).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import cv2

# The most bands one image is cut into (the gain from more is small next to the hand-off cost).
MAX_BANDS = 4
# Rows below which an image is not cut at all.
MIN_ROWS_PER_BAND = 16

BandWork = Callable[[int, int], None]

# The most bands one image is cut into, process-wide (``limit_bands``); None: OpenCV's thread count.
_band_limit: int | None = None


def limit_bands(count: int | None) -> None:
    """Cut images into at most ``count`` bands from now on, whatever OpenCV's own thread count
    (process-wide); ``None`` (the default): as many as OpenCV has threads, so that
    ``cv2.setNumThreads(1)`` keeps everything on one."""
    global _band_limit
    if count is not None and count < 1:
        raise ValueError(f"limit_bands: count must be >= 1 or None, got {count}")
    _band_limit = count


def band_limit() -> int:
    """The most bands one image is cut into now (``limit_bands``, else OpenCV's thread count)."""
    return cv2.getNumThreads() if _band_limit is None else _band_limit


class _Worker:
    """One daemon thread that runs a band when told to and reports back."""

    def __init__(self) -> None:
        self._start = threading.Semaphore(0)
        self._finished = threading.Semaphore(0)
        self._work: BandWork | None = None
        self._rows = (0, 0)
        self._error: BaseException | None = None
        threading.Thread(target=self._loop, name="trt_perception-row-band", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self._start.acquire()
            try:
                assert self._work is not None
                self._work(*self._rows)
            except BaseException as error:  # handed to the caller, which raises it
                self._error = error
            self._finished.release()

    def begin(self, work: BandWork, start: int, stop: int) -> None:
        self._work, self._rows, self._error = work, (start, stop), None
        self._start.release()

    def end(self) -> BaseException | None:
        self._finished.acquire()
        self._work = None
        return self._error


class RowBands:
    """Runs ``work(start, stop)`` over the row bands of ``rows`` rows, on up to ``bands`` cores (and
    no more than ``band_limit()``)."""

    def __init__(self, bands: int) -> None:
        self.bands = max(1, bands)
        self._workers = [_Worker() for _ in range(self.bands - 1)]
        self._busy = threading.Lock()

    def run(self, work: BandWork, rows: int, min_bands: int = 2) -> None:
        """Call ``work`` on bands covering rows ``0..rows`` and return when all are done; an exception
        raised by any band is raised here. With fewer than ``min_bands`` bands available the rows run
        as one piece. A second caller while one run is under way gets its bands run one after another
        in its own thread (nothing waits for the workers)."""
        count = min(self.bands, band_limit(), rows // MIN_ROWS_PER_BAND)
        if count < max(2, min_bands) or not self._busy.acquire(blocking=False):
            work(0, rows)
            return
        try:
            edges = [rows * band // count for band in range(count + 1)]
            workers = self._workers[: count - 1]
            for worker, start, stop in zip(workers, edges[1:], edges[2:]):
                worker.begin(work, start, stop)
            first_error: BaseException | None = None
            try:
                work(edges[0], edges[1])
            except BaseException as error:
                first_error = error
            errors = [worker.end() for worker in workers]
            for band_error in [first_error, *errors]:
                if band_error is not None:
                    raise band_error
        finally:
            self._busy.release()


_shared: RowBands | None = None
_shared_lock = threading.Lock()


def _forget_shared_after_fork() -> None:
    """A forked child has none of the parent's threads: it makes its own RowBands when it needs one."""
    global _shared, _shared_lock
    _shared, _shared_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_shared_after_fork)


def shared_row_bands() -> RowBands:
    """The process's RowBands, up to one band per core and MAX_BANDS; made on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RowBands(min(MAX_BANDS, os.cpu_count() or 1))
        return _shared


def run_in_bands(work: BandWork, rows: int, nbytes: int, min_bytes: int, min_bands: int = 2) -> None:
    """``work`` over rows ``0..rows``: in one piece in this thread when the data has fewer than
    ``min_bytes`` bytes (a hand-off would cost more than it saves), else on the process's row bands
    (``RowBands.run``)."""
    if nbytes < min_bytes:
        work(0, rows)
    else:
        shared_row_bands().run(work, rows, min_bands)
