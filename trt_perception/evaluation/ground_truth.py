"""Ground truth for bag evaluation: label masks and boxes, from files or from a topic in the bag.

File sources (a folder of masks, a COCO json) are matched to frames by order: the k-th message on
the image topic (counting skipped ones, so a bad frame never shifts the rest) gets the k-th mask
file in sorted name order, or the k-th COCO image in ``file_name`` order. A ground-truth topic is
matched by header stamp (see ``StampMatcher``).
"""

from __future__ import annotations

import io
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.errors import ImageDecodeError, TrtPerceptionError
from trt_perception.evaluation.image_headers import image_file_size
from trt_perception.image_decoding import DEFAULT_MAX_PIXELS, check_pixel_count, sniff_codec
from trt_perception.image_files import folder_images

_PNG_COLOUR_TYPE_OFFSET = 25  # signature, IHDR length and type, width, height, bit depth

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")


class GroundTruthError(TrtPerceptionError):
    """Ground truth that cannot be used (missing file, bad json, colour mask, ...)."""


@dataclass(frozen=True)
class MaskTruth:
    """Per-pixel class indices, HxW uint8 or uint16."""

    labels: npt.NDArray[np.unsignedinteger]


@dataclass(frozen=True)
class BoxTruth:
    """``xyxy`` boxes (source pixels), their class names, COCO ``iscrowd`` flags and ``area``s.

    ``areas`` (COCO's object area, e.g. of the segmentation; decides small / medium / large) is
    None when the source has none: the box areas are used then.
    """

    boxes: npt.NDArray[np.float64]
    classes: list[str]
    crowd: list[bool] = field(default_factory=list)
    areas: npt.NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        if not self.crowd:
            object.__setattr__(self, "crowd", [False] * len(self.classes))


Truth = MaskTruth | BoxTruth


def class_index(class_id: str, class_names: list[str]) -> int:
    """The class index a Detection2D ``class_id`` stands for: the index as text (what the nodes
    publish by default, ``class_id_format: index``) or a class name; ``len(class_names)`` for a class
    the model lacks."""
    if class_id.isdigit() and int(class_id) < len(class_names):
        return int(class_id)
    return class_names.index(class_id) if class_id in class_names else len(class_names)


def class_name(class_id: str, class_names: list[str]) -> str:
    """The model's class name a ``class_id`` stands for (``class_index``), or ``class_id`` itself for a
    class the model lacks."""
    index = class_index(class_id, class_names)
    return class_names[index] if index < len(class_names) else class_id



def image_files(paths: list[Path]) -> list[Path]:
    """Image files named directly, or found (sorted by name) in the single folder given."""
    if len(paths) == 1 and paths[0].is_dir():
        found = folder_images(paths[0], IMAGE_SUFFIXES, recursive=False)
        if not found:
            raise GroundTruthError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {paths[0]}")
        return found
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise GroundTruthError(f"image files not found: {', '.join(missing)}")
    return list(paths)


def read_image_file(path: Path, flag: int, max_pixels: int, what: str = "image") -> tuple[bytes, npt.NDArray]:
    """An image file's bytes and ``cv2.imread(path, flag)``'s pixels, the file read once. Refused
    before decoding when its header claims more than ``max_pixels`` pixels, or when its size cannot
    be read from its header (see ``image_file_size``); ``max_pixels`` 0: no limit."""
    data = _checked_image_bytes(path, max_pixels)
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flag) if data else None
    if pixels is None:
        raise GroundTruthError(f"cannot read {what} {path}")
    return data, pixels


def _checked_image_bytes(path: Path, max_pixels: int) -> bytes:
    """The bytes of an image file whose header allows it to be decoded (``read_image_file``)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise GroundTruthError(f"cannot read {path}: {error.strerror or error}") from None
    if max_pixels:
        try:
            size = image_file_size(data)
        except ImageDecodeError as error:
            raise GroundTruthError(f"{path}: {error}") from None
        if size is None:
            raise GroundTruthError(
                f"{path}: the size of this image format cannot be read before decoding it, so max_pixels "
                f"{max_pixels} cannot be checked; convert it to png, or set max_pixels to 0 for no limit"
            )
        try:
            check_pixel_count(size[0], size[1], max_pixels, str(path))
        except ImageDecodeError as error:
            raise GroundTruthError(str(error)) from None
    return data


def _is_palette_png(data: bytes) -> bool:
    """Whether ``data`` is a PNG of palette indices (IHDR colour type 3)."""
    return sniff_codec(data) == "png" and len(data) > _PNG_COLOUR_TYPE_OFFSET and data[_PNG_COLOUR_TYPE_OFFSET] == 3


def _palette_indices(data: bytes, path: Path) -> npt.NDArray[np.uint8]:
    """The palette indices of a palette PNG (Pillow; OpenCV would give the palette's colours)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            indices = np.asarray(image, np.uint8) if image.mode == "P" else None
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError):
        raise GroundTruthError(f"cannot read mask {path}") from None
    if indices is None:
        raise GroundTruthError(f"mask {path}: a palette PNG that Pillow reads as mode {image.mode}, not as indices")
    return indices


def read_mask(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> MaskTruth:
    """A single-channel 8- or 16-bit label image (values are class indices, not colours), or a palette
    PNG (PASCAL VOC's masks: the palette indices are the classes), refused before decoding when
    larger than ``max_pixels`` (see ``read_image_file``)."""
    data = _checked_image_bytes(path, max_pixels)
    if _is_palette_png(data):
        return MaskTruth(_palette_indices(data, path))
    labels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if labels is None:
        raise GroundTruthError(f"cannot read mask {path}")
    if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
        raise GroundTruthError(
            f"mask {path} is {labels.dtype} with shape {labels.shape}; ground-truth masks must be "
            "single-channel 8- or 16-bit images of class indices"
        )
    return MaskTruth(np.asarray(labels))


class MaskFolder:
    """Mask files of a folder, the k-th (sorted by name) for frame k."""

    def __init__(self, folder: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if not folder.is_dir():
            raise GroundTruthError(f"ground-truth mask folder {folder} does not exist")
        self.files = image_files([folder])
        self.max_pixels = max_pixels  # larger masks are refused before decoding
        self.description = f"{len(self.files)} mask files in {folder}, matched to frames by order"

    def __len__(self) -> int:
        return len(self.files)

    def for_frame(self, index: int) -> MaskTruth | None:
        """The mask of frame ``index``, None past the last file."""
        return read_mask(self.files[index], self.max_pixels) if index < len(self.files) else None


@dataclass(frozen=True)
class CocoImage:
    """One image of a COCO file with its boxes."""

    file_name: str
    width: int | None
    height: int | None
    truth: BoxTruth


def read_coco(path: Path) -> list[CocoImage]:
    """Images of a COCO detection json (sorted by ``file_name``) with their boxes as ``xyxy``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images = {int(i["id"]): i for i in data["images"]}
        boxes: dict[int, list[tuple[list[float], str, bool, float]]] = {image_id: [] for image_id in images}
        for ann in data.get("annotations", []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            if not all(math.isfinite(v) for v in (x, y, w, h)):
                raise GroundTruthError(f"{path}: annotation {ann.get('id')} has a bbox value that is not finite: {ann['bbox']}")
            if ann["image_id"] not in boxes:
                raise GroundTruthError(f"{path}: annotation {ann.get('id')} names unknown image {ann['image_id']}")
            if ann["category_id"] not in categories:
                raise GroundTruthError(
                    f"{path}: annotation {ann.get('id')} names unknown category {ann['category_id']}"
                )
            boxes[ann["image_id"]].append((
                [x, y, x + w, y + h], categories[ann["category_id"]], bool(ann.get("iscrowd", 0)),
                float(ann.get("area", w * h)),
            ))
    except FileNotFoundError:
        raise GroundTruthError(f"COCO file {path} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise GroundTruthError(f"{path} is not a valid COCO detection file: {error!r}") from error
    result = []
    for image_id, image in images.items():
        items = boxes[image_id]
        truth = BoxTruth(
            np.asarray([b for b, _, _, _ in items], np.float64).reshape(-1, 4),
            [name for _, name, _, _ in items],
            [crowd for _, _, crowd, _ in items],
            np.asarray([area for _, _, _, area in items], np.float64),
        )
        result.append(CocoImage(str(image.get("file_name", image_id)), image.get("width"), image.get("height"), truth))
    return sorted(result, key=lambda image: image.file_name)


class CocoFile:
    """A COCO json's images in ``file_name`` order, the k-th for frame k."""

    def __init__(self, path: Path) -> None:
        self.images = read_coco(path)
        self.description = f"{len(self.images)} images of {path}, matched to frames in file_name order"

    def __len__(self) -> int:
        return len(self.images)

    def for_frame(self, index: int) -> BoxTruth | None:
        """The boxes of frame ``index``, None past the last image."""
        return self.images[index].truth if index < len(self.images) else None


Pending = TypeVar("Pending")


class StampMatcher(Generic[Pending]):
    """Pairs frames with ground-truth messages of equal header stamp, in whatever order they come.

    Each side waits in a bounded queue for its partner; when a queue is full its oldest entry is
    given up and counted as unmatched, so memory stays bounded on any bag. A truth offered with
    ``count_unmatched`` False is not counted when it finds no frame (another time slice counts it).
    """

    def __init__(self, max_pending: int = 64) -> None:
        self.max_pending = max_pending
        self._frames: OrderedDict[int, Pending] = OrderedDict()
        self._truths: OrderedDict[int, Truth] = OrderedDict()
        self._uncounted_truths: set[int] = set()  # stamps of waiting truths not to count if unmatched
        self._skipped_frames: set[int] = set()  # stamps of this slice's frames that could not be run
        self.frames_without_truth = 0
        self.truths_without_frame = 0

    def add_frame(self, stamp: int, frame: Pending) -> tuple[Pending, Truth] | None:
        """Offer a frame; returns it with its ground truth if that came already."""
        truth, given_up = self._offer(stamp, frame, self._frames, self._truths)
        self.frames_without_truth += len(given_up)
        if truth is None:
            return None
        self._uncounted_truths.discard(stamp)
        return frame, truth

    def add_truth(self, stamp: int, truth: Truth, count_unmatched: bool = True) -> tuple[Pending, Truth] | None:
        """Offer a ground truth; returns it with its frame if that came already."""
        frame, given_up = self._offer(stamp, truth, self._truths, self._frames)
        self._count_truths(given_up)
        if frame is None and not count_unmatched and stamp not in self._skipped_frames:
            self._uncounted_truths.add(stamp)
        return None if frame is None else (frame, truth)

    def frame_skipped(self, stamp: int) -> None:
        """A frame of this slice that could not be run: a truth with its stamp counts as unmatched here
        even when offered with ``count_unmatched`` False (this slice holds its image)."""
        self._skipped_frames.add(stamp)
        self._uncounted_truths.discard(stamp)

    def _count_truths(self, given_up: list[int]) -> None:
        for stamp in given_up:
            if stamp in self._uncounted_truths:
                self._uncounted_truths.discard(stamp)
            else:
                self.truths_without_frame += 1

    def _offer(
        self, stamp: int, item: Any, waiting: OrderedDict[int, Any], partners: OrderedDict[int, Any]
    ) -> tuple[Any, list[int]]:
        """The partner waiting under ``stamp`` (taken out), or queue ``item``; and the stamps of the entries
        given up."""
        if stamp in partners:
            return partners.pop(stamp), []
        given_up = []
        if waiting.pop(stamp, None) is not None:  # one stamp twice: the earlier one cannot be told apart
            given_up.append(stamp)
        waiting[stamp] = item
        if len(waiting) > self.max_pending:
            given_up.append(waiting.popitem(last=False)[0])
        return None, given_up

    def finish(self) -> None:
        """Count whatever is still waiting as unmatched."""
        self.frames_without_truth += len(self._frames)
        self._count_truths(list(self._truths))
        self._frames.clear()
        self._truths.clear()
