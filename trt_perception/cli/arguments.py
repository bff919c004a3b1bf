"""argparse value types shared by the subcommands: a bad value ends in argparse's one error line and exit 2."""

from __future__ import annotations

import argparse
import math
import re

from trt_perception.image_decoding import DEFAULT_MAX_PIXELS

# Largest stamp a std_msgs/Header holds (int32 seconds).
MAX_STAMP_SECONDS = 2**31 - 1
# ROS 2 topic name (as stored in a bag: no ~ or {} substitutions): tokens of letters, digits and
# underscores that do not start with a digit, separated by single slashes, optionally absolute.
_TOPIC_NAME = re.compile(r"/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A finite number above 0 (e.g. a frame rate)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1] (an opacity, a score threshold, an IoU)."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def stamp_seconds(text: str) -> float:
    """Seconds since the epoch that a ROS header stamp can hold (0 to 2^31 - 1)."""
    value = _number(text)
    if not 0 <= value <= MAX_STAMP_SECONDS:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_STAMP_SECONDS} (a ROS stamp), got {text!r}")
    return value


def topic_name(text: str) -> str:
    """A valid ROS 2 topic name, e.g. ``/camera/image_raw``."""
    if not _TOPIC_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a valid ROS topic name (letters, digits and _ in /-separated parts that do not "
            f"start with a digit, e.g. /camera/image_raw)"
        )
    return text


def add_max_pixels_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-pixels``: the most pixels an input image may have (0: no limit)."""
    parser.add_argument(
        "--max-pixels", type=non_negative_int, default=DEFAULT_MAX_PIXELS,
        help=f"skip images with more pixels (width x height, read from the file header before decoding); "
             f"0: no limit (default {DEFAULT_MAX_PIXELS})",
    )
