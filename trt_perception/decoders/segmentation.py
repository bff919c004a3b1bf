"""Segmentation decoders: model outputs to an ``HxW`` label image at source or network size."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.decoders.params import DecoderParams
from trt_perception.decoders.tensors import (
    Shape,
    declared_output,
    dims_agree,
    finite_range,
    require_rank,
    select_output,
    shape_mismatch,
    single_channel_map,
)
from trt_perception.errors import InferenceError, SpecError
from trt_perception.decoders.upsampling import argmax_resized, prepare, threshold_resized
from trt_perception.geometry import ResizeGeometry
from trt_perception.gpu.resize_tables import nearest_indices

# Nearest neighbour with pixel centres aligned (cv2.INTER_NEAREST is shifted by half a pixel).
LABEL_INTERPOLATION = cv2.INTER_NEAREST_EXACT


def label_dtype(num_classes: int | None) -> type[np.unsignedinteger]:
    """``uint8`` for up to 256 classes (or an unknown count), else ``uint16``."""
    return np.uint8 if num_classes is None or num_classes <= 256 else np.uint16


def resize_to_output(
    labels: npt.NDArray, geometry: ResizeGeometry, at_source: bool
) -> npt.NDArray:
    """Bring an ``HxW`` label map covering the network input (any resolution) to source size (the
    image's part only) or network size, nearest with pixel centres aligned (``LABEL_INTERPOLATION``)."""
    window, size = output_window(labels, geometry, at_source)
    return resize_labels(window, size)


def output_window(
    array: npt.NDArray, geometry: ResizeGeometry, at_source: bool
) -> tuple[npt.NDArray, tuple[int, int]]:
    """The part of a map covering the network input that the output shows (at source size: the
    image, without padding), and the output's size."""
    if at_source:
        rows, cols = geometry.content_window((array.shape[0], array.shape[1]))
        return array[rows, cols], geometry.source_size
    return array, geometry.network_size


def resize_labels(labels: npt.NDArray, size: tuple[int, int]) -> npt.NDArray:
    """``cv2.resize(labels, size[::-1], interpolation=LABEL_INTERPOLATION)`` for an ``HxW`` map,
    identical and several times faster when upscaling: nearest sampling is separable, so the
    columns are resized at the map's own height and whole rows are then repeated."""
    height, width = size
    if labels.shape == (height, width):
        return np.ascontiguousarray(labels)
    wide = cv2.resize(labels, (width, labels.shape[0]), interpolation=LABEL_INTERPOLATION)
    return np.take(wide, _nearest_rows(labels.shape[0], height), axis=0)


@lru_cache(maxsize=32)
def _nearest_rows(source: int, destination: int) -> npt.NDArray[np.intp]:
    """The source row OpenCV's ``LABEL_INTERPOLATION`` picks for each destination row."""
    rows = nearest_indices(source, destination, exact=True).astype(np.intp)
    rows.flags.writeable = False  # shared through the cache
    return rows


def check_mask_labels(num_classes: int | None, decoder_type: str) -> None:
    """Raise ``SpecError`` unless the spec's labels (when given) are two: a mask decoder's label
    image holds 0 (background) and 1 (foreground), and each needs a name."""
    if num_classes is not None and num_classes != 2:
        raise SpecError(
            f"labels: decoder type {decoder_type} gives labels 0 (background) and 1 (foreground), "
            f"so it needs 2 labels; the spec has {num_classes}"
        )


@dataclass
class SegmentationDecoder(ABC):
    """Turns the outputs of a segmentation model into a label image.

    ``output`` names the tensor to read (None: the model's only output).
    """

    output: str | None
    num_classes: int | None

    def check_outputs(self, shapes: Mapping[str, Shape]) -> None:
        """Raise ``SpecError`` before the first frame when the output it reads is missing from the model's
        outputs (``shapes``: declared shapes, None for dynamic dimensions) or cannot be a one-channel map."""
        name, shape = declared_output(shapes, self.output, "decoder.output")
        one_channel = len(shape) == 3 or (len(shape) == 4 and (dims_agree(shape[1], 1) or dims_agree(shape[3], 1)))
        if not one_channel:
            raise shape_mismatch("decoder.output", name, shape, "one channel: [B,H,W], [B,1,H,W] or [B,H,W,1]", shapes)

    @abstractmethod
    def decode(
        self, outputs: Mapping[str, npt.NDArray], geometry: ResizeGeometry, at_source: bool
    ) -> npt.NDArray[np.unsignedinteger]:
        """Labels ``HxW`` (uint8 or uint16) at source size when ``at_source``, else at network size."""


@dataclass
class LabelsDecoder(SegmentationDecoder):
    """Class indices computed in the graph (ArgMax, fused argmax): ``[B,H,W]``, ``[B,1,H,W]``, ``[B,H,W,1]``."""

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> LabelsDecoder:
        """Build from ``decoder.output`` (default: the model's only output)."""
        return cls(output=params.optional_string("output"), num_classes=num_classes)

    def decode(
        self, outputs: Mapping[str, npt.NDArray], geometry: ResizeGeometry, at_source: bool
    ) -> npt.NDArray[np.unsignedinteger]:
        name, tensor = select_output(outputs, self.output, "decoder.output")
        indices = single_channel_map(name, tensor)
        if not np.issubdtype(indices.dtype, np.integer):
            raise InferenceError(
                f"output '{name}' has dtype {indices.dtype}; the labels decoder expects integer class "
                "indices (use decoder type logits for class scores)"
            )
        dtype = label_dtype(self.num_classes)
        highest = np.iinfo(dtype).max if self.num_classes is None else self.num_classes - 1
        low, high = finite_range(name, indices)
        if low < 0 or high > highest:
            raise InferenceError(
                f"output '{name}' holds class indices {int(low)}..{int(high)}, outside 0..{highest}"
                + (" (the spec has no labels; add them)" if self.num_classes is None else "")
            )
        return resize_to_output(indices.astype(dtype), geometry, at_source)


@dataclass
class LogitsDecoder(SegmentationDecoder):
    """Class scores ``[B,C,H,W]`` (layout NCHW) or ``[B,H,W,C]`` (NHWC), reduced by argmax.

    ``upsample: after_argmax`` (default) takes the argmax at the output's resolution and resizes the
    labels (nearest); ``before_argmax`` resizes the scores bilinearly first (smoother edges, slower).
    """

    layout: str
    upsample: str

    def check_outputs(self, shapes: Mapping[str, Shape]) -> None:
        """Raise ``SpecError`` before the first frame unless the output is 4-D with, where declared, as
        many class channels as the spec has labels."""
        name, shape = declared_output(shapes, self.output, "decoder.output")
        expected = "[B,C,H,W]" if self.layout == "NCHW" else "[B,H,W,C]"
        if len(shape) != 4:
            raise shape_mismatch("decoder.output", name, shape, f"{expected} (decoder.layout {self.layout})", shapes)
        channels = shape[1 if self.layout == "NCHW" else 3]
        if not dims_agree(channels, self.num_classes):
            raise SpecError(
                f"labels: the model output {name!r} has {channels} class channels (shape {list(shape)}, "
                f"decoder.layout {self.layout}) but the spec has {self.num_classes} labels"
            )

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> LogitsDecoder:
        """Build from ``decoder.output``, ``decoder.layout`` and ``decoder.upsample`` (``before_argmax``:
        the compiled blend is prepared here, not at the first frame)."""
        upsample = params.string("upsample", "after_argmax", ("after_argmax", "before_argmax"))
        if upsample == "before_argmax":
            prepare(label_dtype(num_classes))
        return cls(
            output=params.optional_string("output"),
            num_classes=num_classes,
            layout=params.string("layout", "NCHW", ("NCHW", "NHWC")),
            upsample=upsample,
        )

    def decode(
        self, outputs: Mapping[str, npt.NDArray], geometry: ResizeGeometry, at_source: bool
    ) -> npt.NDArray[np.unsignedinteger]:
        name, tensor = select_output(outputs, self.output, "decoder.output")
        require_rank(name, tensor, (4,), "[B,C,H,W]" if self.layout == "NCHW" else "[B,H,W,C]")
        scores = tensor[0]
        channel_axis = 0 if self.layout == "NCHW" else 2
        channels = scores.shape[channel_axis]
        if channels < 2 or scores.size == 0:
            raise InferenceError(
                f"output '{name}' has shape {list(tensor.shape)} ({self.layout}): the logits decoder needs "
                "at least 2 class channels (use decoder type binary for one channel)"
            )
        if self.num_classes is not None and channels != self.num_classes:
            raise InferenceError(
                f"output '{name}' has {channels} class channels but the spec has {self.num_classes} labels"
            )
        finite_range(name, scores)
        dtype = label_dtype(channels)
        if self.upsample == "after_argmax":
            labels = planar_argmax(scores, dtype) if self.layout == "NCHW" else np.argmax(scores, axis=2).astype(dtype)
            return resize_to_output(labels, geometry, at_source)
        if self.layout == "NCHW":  # the bilinear resize needs the channels last
            scores = np.ascontiguousarray(scores.transpose(1, 2, 0))
        window, size = output_window(scores.astype(np.float32, copy=False), geometry, at_source)
        return argmax_resized(window, size, dtype)


def planar_argmax(scores: npt.NDArray, dtype: type[np.unsignedinteger]) -> npt.NDArray[np.unsignedinteger]:
    """``np.argmax(scores, axis=0).astype(dtype)`` for finite ``CxHxW`` scores, one channel plane at
    a time (a running maximum; the first channel wins ties, as with argmax). numpy's argmax over the
    first axis copies the scores to channels-last first; this reads each plane once in place."""
    best = scores[0].copy()
    labels = np.zeros(scores.shape[1:], dtype)
    greater = np.empty(scores.shape[1:], np.bool_)
    for channel in range(1, scores.shape[0]):
        np.greater(scores[channel], best, out=greater)
        np.copyto(labels, channel, where=greater)
        np.maximum(best, scores[channel], out=best)
    return labels


@dataclass
class BinaryDecoder(SegmentationDecoder):
    """One-channel foreground probability or logit; label 1 where it exceeds ``threshold``.

    ``activation: sigmoid`` means the output is a logit and ``threshold`` a probability (compared in
    logit space). ``upsample: before_threshold`` resizes the raw map bilinearly before thresholding.
    """

    threshold: float
    activation: str
    upsample: str
    # derived from ``threshold``: the cut in the output's own units (a logit for activation sigmoid)
    threshold_cut: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.threshold_cut = (
            self.threshold
            if self.activation == "none"
            else float(np.log(self.threshold / (1 - self.threshold)))
        )

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> BinaryDecoder:
        """Build from ``decoder.output``, ``threshold``, ``activation`` (none | sigmoid), ``upsample``
        (``before_threshold``: the compiled blend is prepared here, not at the first frame)."""
        check_mask_labels(num_classes, "binary")
        output = params.optional_string("output")
        activation = params.string("activation", "none", ("none", "sigmoid"))
        threshold = params.number("threshold", 0.5)
        if activation == "sigmoid" and not 0 < threshold < 1:
            raise SpecError(
                f"{params.key('threshold')}: with activation sigmoid it is a probability in (0, 1), got {threshold}"
            )
        upsample = params.string("upsample", "after_threshold", ("after_threshold", "before_threshold"))
        if upsample == "before_threshold":
            prepare()
        return cls(
            output=output, num_classes=2, threshold=threshold, activation=activation, upsample=upsample
        )

    def decode(
        self, outputs: Mapping[str, npt.NDArray], geometry: ResizeGeometry, at_source: bool
    ) -> npt.NDArray[np.unsignedinteger]:
        name, tensor = select_output(outputs, self.output, "decoder.output")
        scores = single_channel_map(name, tensor)
        score_range = finite_range(name, scores)
        if self.upsample == "after_threshold":
            foreground = (scores > self.threshold_cut).astype(np.uint8)
            return resize_to_output(foreground, geometry, at_source)
        window, size = output_window(scores.astype(np.float32, copy=False), geometry, at_source)
        return threshold_resized(window, size, self.threshold_cut, score_range)
