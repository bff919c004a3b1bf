"""Build a rosbag2 from image files, optionally with ground truth (masks or COCO boxes).

Frame k is stamped ``start + k / rate`` (header stamp = log time). Ground truth goes on its own
topic with the same header as its image: masks as ``sensor_msgs/Image`` (mono8 / mono16 class
indices), COCO boxes as ``vision_msgs/Detection2DArray`` (class name in ``class_id``, score 1).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.evaluation.bag_io import (
    COMPRESSED_IMAGE_TYPE,
    DETECTIONS_TYPE,
    IMAGE_TYPE,
    BagWriter,
    compressed_image_message,
    detection_array_message,
    header_message,
    image_message,
)
from trt_perception.evaluation.ground_truth import (
    CocoImage,
    GroundTruthError,
    image_files,
    read_coco,
    read_image_file,
    read_mask,
)
from trt_perception.image_decoding import DEFAULT_MAX_PIXELS, sniff_codec

COMPRESSED_FORMATS = {"jpeg": (".jpg", ".jpeg"), "png": (".png",)}
# raw encoding -> (imread flag, colour conversion of what imread returns)
RAW_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (cv2.IMREAD_COLOR, cv2.COLOR_BGR2RGB),
    "bgr8": (cv2.IMREAD_COLOR, None),
    "rgba8": (cv2.IMREAD_COLOR, cv2.COLOR_BGR2RGBA),
    "bgra8": (cv2.IMREAD_COLOR, cv2.COLOR_BGR2BGRA),
    "mono8": (cv2.IMREAD_GRAYSCALE, None),
    "mono16": (cv2.IMREAD_UNCHANGED, None),
}
ENCODINGS = (*RAW_ENCODINGS, *COMPRESSED_FORMATS)


@dataclass
class MakeBagSummary:
    """What went into the bag."""

    frames: int = 0
    ground_truth: int = 0
    frames_without_ground_truth: list[str] = field(default_factory=list)
    crowd_boxes_dropped: int = 0


def load_pixels(path: Path, encoding: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray:
    """An image file as an array fitting a raw ``encoding``."""
    flag, conversion = RAW_ENCODINGS[encoding]
    pixels = read_image_file(path, flag, max_pixels)[1]
    if encoding == "mono16" and (pixels.ndim != 2 or pixels.dtype != np.uint16):
        raise GroundTruthError(f"{path} is not a single-channel 16-bit image, cannot store it as mono16")
    return pixels if conversion is None else cv2.cvtColor(pixels, conversion)


def compressed_bytes(path: Path, format_: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, tuple[int, int]]:
    """The file's bytes when it already is ``format_`` (no recompression), else re-encoded; and its (h, w)."""
    data, pixels = read_image_file(path, cv2.IMREAD_UNCHANGED, max_pixels)
    if sniff_codec(data) == format_:  # by content, not name: a png named .jpg is re-encoded
        return data, (int(pixels.shape[0]), int(pixels.shape[1]))
    ok, encoded = cv2.imencode(COMPRESSED_FORMATS[format_][0], pixels)
    if not ok:
        raise GroundTruthError(f"cannot encode {path} as {format_}")
    return encoded.tobytes(), (int(pixels.shape[0]), int(pixels.shape[1]))


def make_bag(
    images: list[Path],
    out: Path,
    topic: str,
    rate: float,
    *,
    storage: str = "mcap",
    encoding: str = "rgb8",
    labels_dir: Path | None = None,
    coco: Path | None = None,
    gt_topic: str = "/ground_truth",
    frame_id: str = "camera",
    start_ns: int = 0,
    distro: str = "jazzy",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> MakeBagSummary:
    """Write ``images`` (a folder or files) to a new bag at ``out``, with optional ground truth."""
    if encoding not in ENCODINGS:
        raise GroundTruthError(f"unsupported encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    if rate <= 0:
        raise GroundTruthError(f"rate must be positive, got {rate}")
    if labels_dir is not None and coco is not None:
        raise GroundTruthError("give either label masks or a COCO file, not both")
    files = image_files(images)
    masks = _masks_by_stem(labels_dir) if labels_dir is not None else None
    coco_images = {Path(image.file_name).name: image for image in read_coco(coco)} if coco else None
    summary = MakeBagSummary()
    writer = BagWriter(out, storage, distro)  # refuses an existing path
    try:
        with writer:
            store = writer.store
            for index, path in enumerate(files):
                stamp = start_ns + round(index * 1e9 / rate)
                header = header_message(store, stamp, frame_id)
                if encoding in COMPRESSED_FORMATS:
                    data, size = compressed_bytes(path, encoding, max_pixels)
                    message = compressed_image_message(store, header, data, encoding)
                    writer.write(topic, COMPRESSED_IMAGE_TYPE, stamp, message)
                else:
                    pixels = load_pixels(path, encoding, max_pixels)
                    size = (int(pixels.shape[0]), int(pixels.shape[1]))
                    writer.write(topic, IMAGE_TYPE, stamp, image_message(store, header, pixels, encoding))
                summary.frames += 1
                if masks is None and coco_images is None:
                    continue
                truth = (
                    _mask_message(store, header, masks.get(path.stem), size, max_pixels) if masks is not None
                    else _coco_message(store, header, (coco_images or {}).get(path.name), size, summary)
                )
                if truth is None:
                    summary.frames_without_ground_truth.append(path.name)
                else:
                    writer.write(gt_topic, truth[0], stamp, truth[1])
                    summary.ground_truth += 1
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # created by this call: no half-written bag left behind
        raise
    return summary


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise GroundTruthError(f"label folder {folder} does not exist")
    return {path.stem: path for path in image_files([folder])}


def _mask_message(
    store: Any, header: Any, path: Path | None, size: tuple[int, int], max_pixels: int
) -> tuple[str, Any] | None:
    """A mono8/mono16 label Image of the mask file, None without one; the mask must fit the image."""
    if path is None:
        return None
    labels = read_mask(path, max_pixels).labels
    if labels.shape != size:
        raise GroundTruthError(f"mask {path} is {labels.shape[1]}x{labels.shape[0]} but its image is {size[1]}x{size[0]}")
    return IMAGE_TYPE, image_message(store, header, labels, "mono8" if labels.dtype == np.uint8 else "mono16")


def _coco_message(
    store: Any, header: Any, image: CocoImage | None, size: tuple[int, int], summary: MakeBagSummary
) -> tuple[str, Any] | None:
    """A Detection2DArray of the image's COCO boxes (crowd regions left out and counted), None without one."""
    if image is None:
        return None
    if image.width is not None and image.height is not None and (image.height, image.width) != size:
        raise GroundTruthError(
            f"COCO image {image.file_name} is {image.width}x{image.height} in the json but {size[1]}x{size[0]} on disk"
        )
    keep = [not crowd for crowd in image.truth.crowd]
    summary.crowd_boxes_dropped += keep.count(False)
    names = [name for name, kept in zip(image.truth.classes, keep, strict=True) if kept]
    return DETECTIONS_TYPE, detection_array_message(store, header, image.truth.boxes[keep], names, [1.0] * len(names))
