"""Several cameras in one node: names, per-camera statistics and a fair newest-frame mailbox.

Plain Python (no ROS), so fairness and counting are unit-testable. The node keeps one ``Camera``
per entry of its ``cameras`` parameter (or one unnamed camera on ``image`` when the list is empty),
puts every received frame into ``CameraSlots`` and takes the newest frame of each waiting camera,
round-robin, as one batch for the network.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from trt_perception.ros.statistics import HealthMonitor, NodeStatistics

FrameT = TypeVar("FrameT")

# A camera name becomes a topic name token: `<camera>/image` in, `~/<camera>/<output>` out.
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def camera_names_problem(names: Sequence[str]) -> str | None:
    """Why ``names`` cannot name the cameras of one node, or ``None`` when they can."""
    for name in names:
        if not CAMERA_NAME.fullmatch(name):
            return (
                f"cameras: {name!r} is not a valid camera name (a letter, then letters, digits or '_'; "
                "it becomes the topic names <camera>/image and ~/<camera>/<output>)"
            )
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        return f"cameras: {', '.join(repeated)} named more than once"
    return None


def camera_topic(camera: str, topic: str) -> str:
    """``topic`` of ``camera``: ``image`` -> ``front/image``, ``~/labels`` -> ``~/front/labels``;
    unchanged for the unnamed camera of a single-camera node."""
    if not camera:
        return topic
    if topic.startswith("~/"):
        return f"~/{camera}/{topic[2:]}"
    return f"{camera}/{topic}"


class CameraStatistics:
    """One camera's frame counts, kept in the node's totals too (the same object for a single camera)."""

    def __init__(self, total: NodeStatistics, separate: bool) -> None:
        self.own = NodeStatistics() if separate else total
        self._targets = (total, self.own) if separate else (total,)

    def frame_received(self) -> None:
        """Count an incoming frame."""
        for statistics in self._targets:
            statistics.frame_received()

    def frame_dropped(self) -> None:
        """Count a frame replaced by a newer one of the same camera before it was processed."""
        for statistics in self._targets:
            statistics.frame_dropped()

    def frame_skipped_no_subscribers(self) -> None:
        """Count a frame not processed because none of the camera's outputs had a subscriber."""
        for statistics in self._targets:
            statistics.frame_skipped_no_subscribers()

    def frame_processed(self, stage_milliseconds: Mapping[str, float]) -> None:
        """Count a frame whose results were published, with its per-stage times."""
        for statistics in self._targets:
            statistics.frame_processed(stage_milliseconds)

    def frame_failed(self, message: str, bad_input: bool) -> None:
        """Count a skipped frame and remember the message."""
        for statistics in self._targets:
            statistics.frame_failed(message, bad_input)

    def problem_noted(self, message: str) -> None:
        """Remember a problem with a frame that was still published, without counting it failed."""
        for statistics in self._targets:
            statistics.problem_noted(message)


@dataclass
class Camera:
    """One camera of a node: its name (empty for the single camera), position, result publishers
    by output name, statistics, the judge of its input's health and, while the node processes, its
    subscription and input topic."""

    name: str
    index: int
    outputs: dict[str, Any]
    stats: CameraStatistics
    health: HealthMonitor
    subscription: Any = None
    input_topic: str = ""
    reliability: str = "best_effort"  # of the subscription (input_reliability, or what auto matched)


class CameraSlots(Generic[FrameT]):
    """The newest pending frame of each camera; ``take`` serves the cameras round-robin.

    A newer frame replaces its camera's pending one (the older is dropped and counted by the caller),
    so no backlog builds up. ``take`` returns the pending frames of up to ``limit`` cameras, starting
    after the camera served last, so a fast camera cannot starve a slow one: every camera with a
    waiting frame is served within ``ceil(cameras / limit)`` takes.
    """

    def __init__(self, cameras: int) -> None:
        self._condition = threading.Condition()
        self._frames: list[FrameT | None] = [None] * cameras
        self._next = 0
        self._closed = False

    def put(self, camera: int, frame: FrameT) -> bool:
        """Store ``frame`` as ``camera``'s newest; return whether an unprocessed frame was dropped."""
        with self._condition:
            replaced = self._frames[camera] is not None
            self._frames[camera] = frame
            self._condition.notify()
            return replaced

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds until a frame is pending or the slots are closed; whether a
        frame is pending. Nothing is taken: a caller that must serialize with others takes under its
        own lock afterwards."""
        with self._condition:
            return self._condition.wait_for(self._pending_or_closed, timeout) and self._pending()

    def empty(self) -> bool:
        """Whether no camera has a pending frame."""
        with self._condition:
            return not self._pending()

    def take(self, limit: int | None, timeout: float | None = None) -> list[tuple[int, FrameT]]:
        """Wait for frames (up to ``timeout`` seconds) and remove those of up to ``limit`` cameras
        (``None``: all), in round-robin order; empty on timeout or close."""
        with self._condition:
            self._condition.wait_for(self._pending_or_closed, timeout)
            count = len(self._frames)
            taken: list[tuple[int, FrameT]] = []
            for step in range(count):
                camera = (self._next + step) % count
                frame = self._frames[camera]
                if frame is None:
                    continue
                taken.append((camera, frame))
                self._frames[camera] = None
                if limit is not None and len(taken) == limit:
                    break
            if taken:
                self._next = (taken[-1][0] + 1) % count
            return taken

    def _pending(self) -> bool:
        return any(frame is not None for frame in self._frames)

    def _pending_or_closed(self) -> bool:
        return self._closed or self._pending()

    def close(self) -> None:
        """Wake up and release a waiting ``take`` or ``wait``; later frames are still accepted but nobody waits."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed
