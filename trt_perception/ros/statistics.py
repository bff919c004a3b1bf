"""Counters, rates and per-stage latencies of a perception node, reported on /diagnostics.

Plain Python (no ROS) so the arithmetic is unit-testable; the node turns ``NodeStatistics.report``
into a ``diagnostic_msgs/DiagnosticStatus``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

STAGES = ("decode", "preprocess", "inference", "postprocess", "publish")


class RateMeter:
    """Events per second over a sliding time window."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_seconds
        self._clock = clock
        self._stamps: deque[float] = deque()

    def tick(self) -> None:
        """Record one event now."""
        now = self._clock()
        self._stamps.append(now)
        self._expire(now)

    def rate(self) -> float:
        """Events per second in the window (0 with fewer than two events)."""
        self._expire(self._clock())
        if len(self._stamps) < 2:
            return 0.0
        span = self._stamps[-1] - self._stamps[0]
        return (len(self._stamps) - 1) / span if span > 0 else 0.0

    def _expire(self, now: float) -> None:
        while self._stamps and now - self._stamps[0] > self._window:
            self._stamps.popleft()


class LatencyWindow:
    """Mean and maximum of the last ``size`` samples (milliseconds)."""

    def __init__(self, size: int) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, milliseconds: float) -> None:
        """Record one sample."""
        self._samples.append(milliseconds)

    @property
    def count(self) -> int:
        """Samples in the window."""
        return len(self._samples)

    def mean(self) -> float:
        """Mean of the window (0 when empty)."""
        return sum(self._samples) / len(self._samples) if self._samples else 0.0

    def maximum(self) -> float:
        """Largest sample of the window (0 when empty)."""
        return max(self._samples, default=0.0)


@dataclass(frozen=True)
class StatisticsReport:
    """A snapshot of the node's statistics."""

    key_values: list[tuple[str, str]]
    last_error: str
    seconds_since_error: float | None


class NodeStatistics:
    """Thread-safe frame counters, input/processed rates, stage latencies and the last error."""

    def __init__(
        self,
        window_seconds: float = 5.0,
        latency_samples: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._input_rate = RateMeter(window_seconds, clock)
        self._processed_rate = RateMeter(window_seconds, clock)
        self._latency = {stage: LatencyWindow(latency_samples) for stage in STAGES}
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.bad_input = 0
        self.failed = 0
        self.skipped_no_subscribers = 0
        self._last_error = ""
        self._last_error_time: float | None = None

    def frame_received(self) -> None:
        """Count an incoming frame."""
        with self._lock:
            self.received += 1
            self._input_rate.tick()

    def frame_dropped(self) -> None:
        """Count a frame replaced by a newer one before it was processed."""
        with self._lock:
            self.dropped += 1

    def frame_skipped_no_subscribers(self) -> None:
        """Count a frame not processed because no output had a subscriber."""
        with self._lock:
            self.skipped_no_subscribers += 1

    def frame_processed(self, stage_milliseconds: Mapping[str, float]) -> None:
        """Count a frame whose results were published, with its per-stage times."""
        with self._lock:
            self.processed += 1
            self._processed_rate.tick()
            for stage, milliseconds in stage_milliseconds.items():
                if stage in self._latency:
                    self._latency[stage].add(milliseconds)

    def frame_failed(self, message: str, bad_input: bool) -> None:
        """Count a skipped frame (bad input or inference failure) and remember the message."""
        with self._lock:
            if bad_input:
                self.bad_input += 1
            else:
                self.failed += 1
            self._last_error = message
            self._last_error_time = self._clock()

    def report(self) -> StatisticsReport:
        """Snapshot for /diagnostics: rates in Hz, counts, latency mean/max per stage in ms."""
        with self._lock:
            values = [
                ("input_rate_hz", f"{self._input_rate.rate():.2f}"),
                ("processed_rate_hz", f"{self._processed_rate.rate():.2f}"),
                ("frames_received", str(self.received)),
                ("frames_processed", str(self.processed)),
                ("frames_dropped", str(self.dropped)),
                ("frames_bad_input", str(self.bad_input)),
                ("frames_failed", str(self.failed)),
                ("frames_skipped_no_subscribers", str(self.skipped_no_subscribers)),
            ]
            for stage, window in self._latency.items():
                values.append((f"latency_{stage}_ms_mean", f"{window.mean():.3f}"))
                values.append((f"latency_{stage}_ms_max", f"{window.maximum():.3f}"))
            values.append(("last_error", self._last_error))
            since = None if self._last_error_time is None else self._clock() - self._last_error_time
            return StatisticsReport(values, self._last_error, since)
