"""What the benchmark scripts share: the camera frame sizes (``WxH`` on the command line), the
models' sample frames and a timing helper. Imports no other bench script, so every script can import it."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"selfie_segmentation": "astronaut.png", "ppocrv4_det": "page.png", "centernet_mobilenetv3_coco": "coffee.png"}
RESOLUTIONS = [(480, 640), (720, 1280), (1080, 1920)]
IMAGES = ROOT / "test" / "fixtures" / "images"


def size_name(size: tuple[int, int]) -> str:
    """``(height, width)`` as ``WxH``."""
    return f"{size[1]}x{size[0]}"


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. ``1280x720``) as ``(height, width)``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"frame size {text!r} is not WIDTHxHEIGHT, e.g. 1280x720") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"frame size {text!r} must be positive")
    return height, width


def camera_frame(model: str, size: tuple[int, int]) -> np.ndarray:
    """The model's sample image resized to a camera resolution, as bgr8."""
    image = cv2.imread(str(IMAGES / MODELS[model]))
    assert image is not None, MODELS[model]
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def median_ms(fn: Callable[[], Any], repeat: int, warmup: int = 10) -> float:
    """Median wall-clock milliseconds of ``fn()`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3
