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
        self.last_frame_time: float | None = None  # clock time of the newest received frame

    def frame_received(self) -> None:
        """Count an incoming frame."""
        with self._lock:
            self.received += 1
            self.last_frame_time = self._clock()
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
            self._remember_problem(message)

    def problem_noted(self, message: str) -> None:
        """Remember a problem with a frame whose results were still published (e.g. boxes left out), as
        the last error, without counting the frame failed."""
        with self._lock:
            self._remember_problem(message)

    def _remember_problem(self, message: str) -> None:
        self._last_error = message
        self._last_error_time = self._clock()

    def input_rate_hz(self) -> float:
        """Frames received per second over the window."""
        with self._lock:
            return self._input_rate.rate()

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


@dataclass(frozen=True)
class HealthLimits:
    """What counts as healthy input: an expected rate range in Hz (0 leaves that side unchecked), the
    seconds without a frame that make a stall (while a publisher exists), and the share of frames
    dropped or skipped (bad input, failed) above which the node warns."""

    min_rate_hz: float = 0.0
    max_rate_hz: float = 0.0
    stall_seconds: float = 3.0
    max_lost_share: float = 0.5


@dataclass(frozen=True)
class Health:
    """A diagnostics level name (``OK`` | ``WARN`` | ``ERROR``) and the reason."""

    level: str
    message: str


class HealthMonitor:
    """Judges the input from ``NodeStatistics`` counts between two calls of ``assess`` (plain Python)."""

    def __init__(self, limits: HealthLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._started = clock()
        self._last_counts = (0, 0)

    def assess(self, statistics: NodeStatistics, input_rate_hz: float, publishers: int) -> list[Health]:
        """Problems now (most severe first; empty when healthy): stalled input while ``publishers`` > 0,
        input rate out of range, too many frames dropped or skipped since the last call."""
        limits = self.limits
        problems = []
        last_frame = statistics.last_frame_time
        idle = self._clock() - (self._started if last_frame is None else last_frame)
        if publishers > 0 and idle > limits.stall_seconds:
            problems.append(Health("ERROR", f"no frame for {idle:.1f} s while {publishers} publishers exist"))
        elif last_frame is not None and (
            (limits.min_rate_hz > 0 and input_rate_hz < limits.min_rate_hz)
            or (limits.max_rate_hz > 0 and input_rate_hz > limits.max_rate_hz)
        ):
            problems.append(Health(
                "WARN", f"input rate {input_rate_hz:.2f} Hz outside the expected "
                        f"[{limits.min_rate_hz:g}, {limits.max_rate_hz:g}] Hz"
            ))
        received, lost = statistics.received, statistics.dropped + statistics.bad_input + statistics.failed
        new_received, new_lost = received - self._last_counts[0], lost - self._last_counts[1]
        self._last_counts = (received, lost)
        if new_received > 0 and new_lost / new_received > limits.max_lost_share:
            problems.append(Health(
                "WARN", f"{new_lost} of {new_received} frames dropped or skipped since the last report "
                        f"(more than {limits.max_lost_share:.0%})"
            ))
        return problems
