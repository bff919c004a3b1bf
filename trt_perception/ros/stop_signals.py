"""SIGINT/SIGTERM handling of the node executables: the first signal stops the node, later ones are ignored.

Standard library only, so the node wrappers install it before importing rclpy, numpy or the model
runtime: a signal that arrives while the node is still importing or loading its model ends it with
exit 0 as well. ``run_node`` tells rclpy not to install its own handlers.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):
    """Raised in the main thread by the first SIGINT/SIGTERM (a BaseException, like KeyboardInterrupt,
    so that ``except Exception`` in callbacks does not swallow it)."""


_stop_requested = False


def _on_stop_signal(number: int, frame: FrameType | None) -> None:
    global _stop_requested
    if _stop_requested:
        return  # a second Ctrl-C must not interrupt the clean stop the first one started
    _stop_requested = True
    raise StopRequested(signal.Signals(number).name)


def install_stop_signals() -> None:
    """Route SIGINT and SIGTERM to ``StopRequested`` (once); call from the main thread."""
    for number in STOP_SIGNALS:
        signal.signal(number, _on_stop_signal)


def stop_requested() -> bool:
    """Whether a stop signal arrived."""
    return _stop_requested
