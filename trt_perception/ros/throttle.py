"""Rate-limit repeated log messages per kind of problem."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

_NUMBER = re.compile(r"\d+")


def problem_kind(message: str) -> str:
    """The message with every number replaced by ``#``: "data has 1000 bytes, expected 442368" and
    "data has 20 bytes, expected 921600" are the same kind of problem."""
    return _NUMBER.sub("#", message)


class MessageThrottle:
    """Lets each kind of message (``problem_kind``) through at most once per ``period`` seconds.

    ``admit`` returns the full text to log (with the number of repeats of that kind suppressed since
    the last one) or ``None`` while the kind is throttled. Unlike a per-call-site throttle, different
    problems reported from the same place are each logged; unlike a per-text throttle, frames that
    differ only in sizes or counts do not each log a warning.
    """

    max_messages = 256

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, message: str) -> str | None:
        """The text to log now for ``message``, or ``None`` when its kind was logged less than ``period`` ago."""
        now = self._clock()
        if len(self._last_logged) > self.max_messages:
            self._forget_older_than(now - self.period)
        kind = problem_kind(message)
        last = self._last_logged.get(kind)
        if last is not None and now - last < self.period:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return None
        self._last_logged[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            return f"{message} ({suppressed} more since last report)"
        return message

    def _forget_older_than(self, cutoff: float) -> None:
        for kind in [k for k, t in self._last_logged.items() if t < cutoff]:
            del self._last_logged[kind]
            self._suppressed.pop(kind, None)
