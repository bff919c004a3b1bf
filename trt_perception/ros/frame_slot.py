"""A one-frame mailbox between the subscription callback and the inference worker.

The callback puts every received frame; the worker takes the newest one. A frame that is replaced
before the worker took it is dropped and counted, so a slow model never builds a backlog.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

FrameT = TypeVar("FrameT")


class LatestFrameSlot(Generic[FrameT]):
    """Holds at most one pending frame; newer frames replace older ones."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: FrameT | None = None
        self._closed = False

    def put(self, frame: FrameT) -> bool:
        """Store ``frame`` as the newest; return whether an older, unprocessed frame was dropped."""
        with self._condition:
            replaced = self._frame is not None
            self._frame = frame
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> FrameT | None:
        """Wait for a frame (up to ``timeout`` seconds) and remove it; ``None`` on timeout or close."""
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        """Wake up and release a waiting ``take``; later frames are still accepted but nobody waits."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed
