"""Image files on disk: find them in folders and read them as pixels (the CLI, the evaluation and
the INT8 calibration all read images this way)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from trt_perception.errors import ImageDecodeError
from trt_perception.image_decoding import DEFAULT_MAX_PIXELS, decode_compressed

IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def folder_images(folder: Path, suffixes: Iterable[str] = IMAGE_FORMATS, recursive: bool = True) -> list[Path]:
    """Files in ``folder`` (and below when ``recursive``) whose lower-case suffix is one of
    ``suffixes``, sorted by path."""
    wanted = set(suffixes)
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in candidates if path.suffix.lower() in wanted and path.is_file())


def collect_images(inputs: list[Path]) -> list[Path]:
    """Image files named directly, then those found in the named folders (sorted per folder)."""
    images = []
    for path in inputs:
        if path.is_dir():
            images.extend(folder_images(path))
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return images


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Pixels and channel order of a png or jpeg file (refused from its header above ``max_pixels``)."""
    image_format = IMAGE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ImageDecodeError(f"{path}: unsupported image file type (use {', '.join(IMAGE_FORMATS)})")
    try:
        decoded = decode_compressed(path.read_bytes(), image_format, max_pixels)
    except ImageDecodeError as error:
        raise ImageDecodeError(f"{path}: {error}") from error
    return decoded.pixels, decoded.channel_order
