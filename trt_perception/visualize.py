"""Pictures of results: palette colouring of labels, alpha overlays and boxes with class names.

Every function works on RGB uint8 images (``as_rgb`` converts decoded images) and returns new
arrays; inputs are never modified.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cache, lru_cache
from types import ModuleType

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.compiled_loops import import_kernels
from trt_perception.preprocess import convert_color
from trt_perception.results import Detections, class_name
from trt_perception.row_bands import run_in_bands

# Binary masks whose colour image has this many bytes or more are coloured in row bands on several
# cores (measured on 2 cores, OpenCV's passes: 1080p 0.28 -> 0.22 ms; at 720p, 2.8 MB, the hand-off
# costs more than it saves: 0.13 -> 0.16 ms; the compiled pass at 1080p: 0.218 -> 0.185 ms).
BANDED_BINARY_COLORS_MIN_BYTES = 4 << 20

# The compiled colouring of 0/1 label maps, once ``prepare_colouring`` has loaded it.
_binary_colouring: ModuleType | None = None

# The 19 Cityscapes training classes' colours (road, sidewalk, building, ... bicycle).
CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)


def _bit_interleaved_colors(indices: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """PASCAL VOC style colours: the bits of the index spread over R, G and B, high bits first."""
    colors = np.zeros((len(indices), 3), np.int64)
    remaining = indices.copy()
    for bit in range(7, -1, -1):
        for channel in range(3):
            colors[:, channel] |= ((remaining >> channel) & 1) << bit
        remaining >>= 3
    return colors.astype(np.uint8)


def default_palette(num_classes: int) -> npt.NDArray[np.uint8]:
    """``num_classes x 3`` RGB colours: Cityscapes' for the first 19, then distinct fixed colours."""
    palette = np.zeros((num_classes, 3), np.uint8)
    known = min(num_classes, len(CITYSCAPES_COLORS))
    if known:  # a spec without labels has no classes to colour in advance
        palette[:known] = CITYSCAPES_COLORS[:known]
    if num_classes > known:
        # bit-interleaved colours of the following indices, skipping the few equal to a Cityscapes one
        extra = num_classes - known
        candidates = _bit_interleaved_colors(np.arange(known, num_classes + len(CITYSCAPES_COLORS), dtype=np.int64))
        taken = np.array(CITYSCAPES_COLORS, np.uint8)
        fresh = ~(candidates[:, None, :] == taken[None, :, :]).all(axis=2).any(axis=1)
        palette[known:] = candidates[fresh][:extra]
    return palette


def make_palette(colors: Sequence[Sequence[int]] | None, num_classes: int) -> npt.NDArray[np.uint8]:
    """The spec's colours (if any) followed by default colours up to ``num_classes`` entries."""
    palette = default_palette(max(num_classes, len(colors or ())))
    if colors:
        palette[: len(colors)] = np.asarray(colors, np.uint8)
    return palette


def as_rgb(pixels: npt.NDArray, channel_order: str) -> npt.NDArray[np.uint8]:
    """A 3-channel RGB uint8 copy of a decoded image (16-bit values keep their high byte)."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    rgb = convert_color(pixels, channel_order, "RGB")
    return rgb.copy() if rgb is pixels or not rgb.flags.writeable else rgb


def full_palette(palette: npt.NDArray[np.uint8], label_dtype: np.dtype) -> npt.NDArray[np.uint8]:
    """``palette`` extended with the default colours to one entry per value of ``label_dtype``
    (256 for uint8), the colours ``colorize`` gives labels beyond the palette."""
    entries = int(np.iinfo(label_dtype).max) + 1
    if len(palette) >= entries:
        return np.ascontiguousarray(palette[:entries], np.uint8)
    return np.concatenate([np.asarray(palette, np.uint8), default_palette(entries)[len(palette) :]])


@lru_cache(maxsize=32)
def _packed_lookup_table(palette_bytes: bytes) -> npt.NDArray[np.int32]:
    """``cv2.LUT``'s table for a palette given as its RGB bytes: per uint8 label one int32 whose bytes
    in memory are R, G, B, 0; built once per palette."""
    palette = np.frombuffer(palette_bytes, np.uint8).reshape(-1, 3)
    rgba = np.zeros((256, 4), np.uint8)
    rgba[:, :3] = full_palette(palette, np.dtype(np.uint8))
    table = rgba.view(np.int32).ravel()
    table.flags.writeable = False  # shared between calls through the cache
    return table


@cache
def colour_kernels() -> ModuleType | None:
    """``colour_kernels`` when numba can be imported, else None (said once in the log)."""
    return import_kernels(
        "trt_perception.colour_kernels", __name__, "binary masks are coloured by OpenCV passes (the same colours, slower; pip install numba)"
    )


def prepare_colouring(num_classes: int | None) -> None:
    """Ready ``colorize`` for the labels of a model of ``num_classes`` classes, ahead of its frames:
    for two, compile (or load from numba's disk cache) the one-pass colouring of 0/1 label maps, which
    ``colorize`` uses from then on; nothing for other counts, without numba, or on a big-endian
    machine (the pass reads eight labels as one little-endian word). numba's import and a first
    compilation take a few hundred milliseconds, which ``colorize`` never spends on a frame."""
    global _binary_colouring
    if num_classes != 2 or _binary_colouring is not None or sys.byteorder != "little":
        return
    kernels = colour_kernels()
    if kernels is not None:
        labels = np.zeros((1, 8), np.uint8)
        for variant in (labels, labels.view()):  # writable labels and read-only ones, two compilations
            variant.flags.writeable = variant is labels
            kernels.colour_binary_rows(variant, _pattern_words(bytes(6)), np.zeros((1, 3), np.uint64), 0, 1)
        _binary_colouring = kernels


def colorize(labels: npt.NDArray[np.unsignedinteger], palette: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``HxW`` class indices to ``HxWx3`` RGB colours; indices beyond the palette get default colours."""
    if labels.dtype == np.uint8 and labels.ndim == 2 and labels.size:
        table = _packed_lookup_table(np.ascontiguousarray(palette, np.uint8).tobytes())
        colors = np.empty((*labels.shape, 3), np.uint8)
        if cv2.minMaxLoc(labels)[1] > 1:
            _colorize_by_table(labels, table, colors)  # OpenCV runs both passes on all its threads
            return colors
        # binary masks: no per-pixel table lookup; the passes run on one core, so a large image is
        # coloured in row bands on several
        binary = table.view(np.uint8).reshape(-1, 4)[:2, :3]
        compiled = _binary_colouring
        if compiled is not None and labels.shape[1] % 8 == 0 and labels.flags.c_contiguous and labels.ctypes.data % 8 == 0:
            words = _pattern_words(binary.tobytes())
            colour_words = colors.reshape(len(colors), -1).view(np.uint64)

            def colour_rows(start: int, stop: int) -> None:
                compiled.colour_binary_rows(labels, words, colour_words, start, stop)
        else:

            def colour_rows(start: int, stop: int) -> None:
                _colorize_binary(labels[start:stop], binary, colors[start:stop])

        run_in_bands(colour_rows, colors.shape[0], colors.nbytes, BANDED_BINARY_COLORS_MIN_BYTES)
        return colors
    highest = int(labels.max(initial=0))
    if highest >= len(palette):
        palette = make_palette(palette.tolist(), highest + 1)
    return palette[labels]


@lru_cache(maxsize=32)
def _pattern_words(colours: bytes) -> npt.NDArray[np.uint64]:
    """For the two RGB colours (6 bytes) of labels 0 and 1: per pattern of eight labels (bit 7 the
    first pixel) the 24 bytes of their colours as three 64-bit words; built once per palette."""
    pair = np.frombuffer(colours, np.uint8).reshape(2, 3)
    bits = (np.arange(256)[:, None] >> np.arange(7, -1, -1)[None, :]) & 1
    words = np.ascontiguousarray(pair[bits].reshape(256, 24)).view(np.uint64)
    words.flags.writeable = False  # shared between calls through the cache
    return words


def _colorize_by_table(labels: npt.NDArray[np.uint8], table: npt.NDArray[np.int32], colors: npt.NDArray[np.uint8]) -> None:
    """``colors[...] = palette[labels]`` as OpenCV table lookups: uint8 label -> packed RGBA word, then drop
    A (measured several times faster than cv2.LUT with a 3-channel uint8 table)."""
    rgba = np.asarray(cv2.LUT(labels, table)).view(np.uint8).reshape(*labels.shape, 4)
    cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB, dst=colors)


def _colorize_binary(labels: npt.NDArray[np.uint8], palette: npt.NDArray[np.uint8], colors: npt.NDArray[np.uint8]) -> None:
    """``colors[...] = palette[labels]`` for labels 0 and 1 only, as bitwise OpenCV passes (each several
    times faster than a table lookup per pixel): a 0/255 mask per channel, ANDed with
    ``palette[0] ^ palette[1]``, XORed with ``palette[0]`` (skipped when that is black)."""
    background = palette[0].astype(np.float64)
    difference = np.bitwise_xor(palette[0], palette[1]).astype(np.float64)
    cv2.cvtColor(np.negative(labels), cv2.COLOR_GRAY2RGB, dst=colors)  # uint8: 0 -> 0, 1 -> 255
    cv2.bitwise_and(colors, difference, dst=colors)  # 3-element arrays act as per-channel scalars
    if background.any():
        cv2.bitwise_xor(colors, background, dst=colors)


def overlay(image: npt.NDArray[np.uint8], colors: npt.NDArray[np.uint8], alpha: float = 0.5) -> npt.NDArray[np.uint8]:
    """``image * (1 - alpha) + colors * alpha``; ``colors`` is resized to the image when they differ."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    height, width = image.shape[:2]
    if colors.shape[:2] != (height, width):
        colors = np.asarray(cv2.resize(colors, (width, height), interpolation=cv2.INTER_NEAREST), np.uint8)
    return np.asarray(cv2.addWeighted(image, 1.0 - alpha, colors, alpha, 0.0), np.uint8)


def draw_detections(
    image: npt.NDArray[np.uint8],
    detections: Detections,
    class_names: tuple[str, ...],
    palette: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8]:
    """A copy of ``image`` with each box drawn in its class colour and labelled ``name score``."""
    canvas = image.copy()
    highest = int(detections.class_ids.max(initial=0))
    colors = make_palette(None if palette is None else palette.tolist(), max(highest + 1, len(class_names)))
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    font_scale = 0.4 * thickness
    for box, score, class_id in zip(detections.boxes, detections.scores, detections.class_ids):
        color = tuple(int(c) for c in colors[class_id])
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        text = f"{class_name(class_names, int(class_id))} {score:.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y1 - text_h - baseline if y1 >= text_h + baseline else y1  # inside the box at the top edge
        cv2.rectangle(canvas, (x1, top), (x1 + text_w, top + text_h + baseline), color, cv2.FILLED)
        text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        cv2.putText(canvas, text, (x1, top + text_h), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_color, thickness,
                    cv2.LINE_AA)
    return canvas
