"""Rate-limit repeated log messages per distinct message text."""

from __future__ import annotations

import time
from collections.abc import Callable


class MessageThrottle:
    """Lets each distinct message through at most once per ``period`` seconds.

    ``admit`` returns the text to log (with the number of repeats suppressed since the last one) or
    ``None`` while the message is throttled. Unlike a per-call-site throttle, different problems
    reported from the same place are each logged.
    """

    max_messages = 256

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, message: str) -> str | None:
        """The text to log now for ``message``, or ``None`` when it was logged less than ``period`` ago."""
        now = self._clock()
        if len(self._last_logged) > self.max_messages:
            self._forget_older_than(now - self.period)
        last = self._last_logged.get(message)
        if last is not None and now - last < self.period:
            self._suppressed[message] = self._suppressed.get(message, 0) + 1
            return None
        self._last_logged[message] = now
        suppressed = self._suppressed.pop(message, 0)
        if suppressed:
            return f"{message} ({suppressed} more since last report)"
        return message

    def _forget_older_than(self, cutoff: float) -> None:
        for message in [m for m, t in self._last_logged.items() if t < cutoff]:
            del self._last_logged[message]
            self._suppressed.pop(message, None)
