"""Rate-limit log messages: per kind of problem, and in total; quote user text only truncated."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

_NUMBER = re.compile(r"\d+")
# Quoted text ('...' or "...", as repr() writes it) is where messages carry what a sender chose.
# An unterminated quote runs to the end.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*(?:'|$)|\"(?:[^\"\\]|\\.)*(?:\"|$)")
# Characters of a message that decide its kind; the rest is detail.
KIND_LENGTH = 80
# Characters of one logged line; the rest is cut (a sender controls encoding/format/frame_id texts).
LINE_LENGTH = 400


def quote_limited(text: str, limit: int = LINE_LENGTH) -> str:
    """``text`` cut to ``limit`` characters, saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def one_line(text: str) -> str:
    """``text`` on one line: its lines stripped and joined by a space, leaving out lines that only point
    at a column (``^``, as rclpy's name validation errors put under the name)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip() not in ("", "^"))


def problem_kind(message: str) -> str:
    """What kind of problem ``message`` reports: its first ``KIND_LENGTH`` characters with every quoted
    text replaced by ``'…'`` and every number by ``#``. "unknown encoding 'yuv9'" and "unknown encoding
    'abc'" are one kind; so are "data has 1000 bytes, expected 442368" and "data has 20 bytes, expected 921600"."""
    return _NUMBER.sub("#", _QUOTED.sub("'…'", message))[:KIND_LENGTH]


class MessageThrottle:
    """Lets each kind of message (``problem_kind``) through at most once per ``period`` seconds, and at
    most ``total_lines`` messages of all kinds together per ``total_window`` seconds.

    ``admit`` returns the text to log (truncated to ``LINE_LENGTH``, with the number of repeats of that
    kind suppressed since its last line, and the number of lines the total limit held back) or ``None``.
    ``suppressed_total`` counts every message not logged, for diagnostics. Unlike a per-call-site throttle,
    different problems reported from the same place are each logged; unlike a per-text throttle, frames
    that differ only in sizes, counts or the text a sender chose do not each log a line.
    """

    max_messages = 256

    def __init__(
        self,
        period: float,
        clock: Callable[[], float] = time.monotonic,
        total_lines: int = 10,
        total_window: float = 10.0,
    ) -> None:
        self.period = period
        self.total_lines = total_lines
        self.total_window = total_window
        self.suppressed_total = 0
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._window_start = float("-inf")
        self._lines_in_window = 0
        self._held_by_total = 0

    def admit(self, message: str) -> str | None:
        """The text to log now for ``message``, or ``None`` when its kind was logged less than ``period``
        ago or the total limit is reached."""
        now = self._clock()
        if len(self._last_logged) > self.max_messages:
            self._forget_older_than(now - self.period)
        kind = problem_kind(message)
        last = self._last_logged.get(kind)
        if last is not None and now - last < self.period:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            self.suppressed_total += 1
            return None
        if now - self._window_start >= self.total_window:
            self._window_start = now
            self._lines_in_window = 0
        if self._lines_in_window >= self.total_lines:
            self._held_by_total += 1
            self.suppressed_total += 1
            return None
        self._lines_in_window += 1
        self._last_logged[kind] = now
        notes = []
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            notes.append(f"{suppressed} more since last report")
        if self._held_by_total:
            notes.append(f"{self._held_by_total} other lines suppressed by the log rate limit")
            self._held_by_total = 0
        text = quote_limited(message)
        return f"{text} ({'; '.join(notes)})" if notes else text

    def _forget_older_than(self, cutoff: float) -> None:
        for kind in [k for k, t in self._last_logged.items() if t < cutoff]:
            del self._last_logged[kind]
            self._suppressed.pop(kind, None)
