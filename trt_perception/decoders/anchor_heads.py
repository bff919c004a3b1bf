"""Raw SSD / RetinaNet / MediaPipe heads: box encodings relative to anchors plus per-anchor class scores.

Box encodings ``[B,N,K]`` or ``[B,N,1,K]`` (K >= 4; columns after the first four, e.g. keypoints,
are ignored) hold, in ``box_coder.order`` (yx: ``ty, tx, th, tw``; xy: ``tx, ty, tw, th``),
the Faster R-CNN box coding of TF Object Detection API and MediaPipe::

    cy = ty / y_scale * anchor_h + anchor_cy        h = exp(th / height_scale) * anchor_h
    cx = tx / x_scale * anchor_w + anchor_cx        w = exp(tw / width_scale) * anchor_w

(``box_coder.size: linear`` uses ``th / height_scale * anchor_h`` instead of the exponential, as
MediaPipe does without ``apply_exponential_on_box_size``). Anchors and boxes are normalized to the
network input. Class scores ``[B,N,C]`` go through ``score_activation``; ``background_column`` is
dropped after the activation (so a softmax still includes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from trt_perception.decoders.anchors import AnchorGenerator, anchors_from_params
from trt_perception.decoders.boxes import to_xyxy
from trt_perception.decoders.detection import DetectionDecoder, SizeCache, class_offset_param
from trt_perception.decoders.params import DecoderParams
from trt_perception.decoders.scores import activate, require_probabilities, score_activation
from trt_perception.decoders.tensors import (
    Shape,
    declared_output,
    dims_agree,
    require_finite,
    require_rank,
    select_output,
    shape_mismatch,
)
from trt_perception.errors import InferenceError, SpecError
from trt_perception.geometry import ResizeGeometry

BOX_ORDERS = ("yx", "xy")
SIZE_ENCODINGS = ("exp", "linear")
CLASS_SELECTIONS = ("all", "best")


@dataclass(frozen=True)
class BoxCoder:
    """Scales and coordinate order of a Faster R-CNN style box coding (TF's ``faster_rcnn_box_coder``)."""

    y_scale: float = 10.0
    x_scale: float = 10.0
    height_scale: float = 5.0
    width_scale: float = 5.0
    order: str = "yx"
    size: str = "exp"

    @classmethod
    def from_params(cls, params: DecoderParams) -> BoxCoder:
        """Build from ``decoder.box_coder``'s keys (defaults: TF OD API's 10, 10, 5, 5, yx, exp)."""
        return cls(
            y_scale=params.number("y_scale", 10.0, minimum=1e-9),
            x_scale=params.number("x_scale", 10.0, minimum=1e-9),
            height_scale=params.number("height_scale", 5.0, minimum=1e-9),
            width_scale=params.number("width_scale", 5.0, minimum=1e-9),
            order=params.string("order", "yx", BOX_ORDERS),
            size=params.string("size", "exp", SIZE_ENCODINGS),
        )

    def decode(self, encodings: npt.NDArray, anchors: npt.NDArray) -> npt.NDArray[np.float32]:
        """``[M,4]`` normalized ``cx, cy, w, h`` from ``[M,>=4]`` encodings and ``[M,4]`` anchors (cy, cx, h, w)."""
        values = np.asarray(encodings[:, :4], dtype=np.float32)
        if self.order == "yx":
            ty, tx, th, tw = values.T
        else:
            tx, ty, tw, th = values.T
        cy = ty / np.float32(self.y_scale) * anchors[:, 2] + anchors[:, 0]
        cx = tx / np.float32(self.x_scale) * anchors[:, 3] + anchors[:, 1]
        h_factor, w_factor = th / np.float32(self.height_scale), tw / np.float32(self.width_scale)
        if self.size == "exp":
            h_factor, w_factor = np.exp(h_factor), np.exp(w_factor)
        return np.stack([cx, cy, w_factor * anchors[:, 3], h_factor * anchors[:, 2]], axis=1)


@dataclass
class AnchorBoxDecoder(DetectionDecoder):
    """``ssd``: raw box encodings + class scores decoded against generated (or file) anchors."""

    boxes: str
    scores: str
    anchor_generator: AnchorGenerator
    box_coder: BoxCoder
    activation: str
    background_column: int | None
    class_selection: str
    _anchors: SizeCache[npt.NDArray[np.float32]] = field(default_factory=SizeCache, repr=False, compare=False)
    device_exact: ClassVar[bool] = False

    @classmethod
    def from_params(cls, params: DecoderParams, num_classes: int | None) -> AnchorBoxDecoder:
        """Build from ``decoder.boxes``, ``scores``, ``anchors``, ``box_coder``, ``score_activation``,
        ``background_column``, ``class_selection`` and ``class_offset``."""
        anchors = DecoderParams(params.value("anchors"), params.key("anchors"), params.base_dir)
        generator = anchors_from_params(anchors, params.base_dir)
        anchors.finish()
        coder = DecoderParams(params.value("box_coder", {}), params.key("box_coder"))
        box_coder = BoxCoder.from_params(coder)
        coder.finish()
        background = params.value("background_column", None)
        if background is not None and (
            isinstance(background, bool) or not isinstance(background, int) or background < 0
        ):
            raise SpecError(f"{params.key('background_column')}: expected a column index or null, got {background!r}")
        return cls(
            class_offset=class_offset_param(params),
            num_classes=num_classes,
            boxes=params.string("boxes"),
            scores=params.string("scores"),
            anchor_generator=generator,
            box_coder=box_coder,
            activation=score_activation(params),
            background_column=background,
            class_selection=params.string("class_selection", "all", CLASS_SELECTIONS),
        )

    def anchors(self, network_size: tuple[int, int]) -> npt.NDArray[np.float32]:
        """The anchors ``[N,4]`` (cy, cx, h, w, normalized) for this network input size (the last few sizes'
        anchors are kept)."""
        return self._anchors.get(network_size, self.anchor_generator.generate)

    def check_outputs(self, shapes: Mapping[str, Shape], network_size: tuple[int, int] | None) -> None:
        boxes_name, boxes_shape = declared_output(shapes, self.boxes, "decoder.boxes")
        scores_name, scores_shape = declared_output(shapes, self.scores, "decoder.scores")
        values = boxes_shape[-1] if boxes_shape else None
        if (
            len(boxes_shape) not in (3, 4)
            or (values is not None and values < 4)
            or (len(boxes_shape) == 4 and not dims_agree(boxes_shape[2], 1))
        ):
            raise shape_mismatch("decoder.boxes", boxes_name, boxes_shape, "[B,N,4] or [B,N,1,4] box encodings", shapes)
        columns = scores_shape[2] if len(scores_shape) == 3 else None
        reserved = (self.background_column is not None) + self.class_offset
        if len(scores_shape) != 3 or (columns is not None and columns <= reserved):
            raise shape_mismatch("decoder.scores", scores_name, scores_shape, "[B,N,C] class scores", shapes)
        if self.background_column is not None and columns is not None and self.background_column >= columns:
            raise SpecError(
                f"decoder.background_column: {self.background_column} is beyond the {columns} columns "
                f"of {scores_name!r}"
            )
        if columns is not None and self.num_classes is not None and columns - reserved > self.num_classes:
            raise SpecError(
                f"labels: {self.num_classes} labels, but the model output {scores_name!r} has {columns} class columns "
                f"({columns - reserved} classes after background_column and class_offset); name every class"
            )
        if network_size is None:
            return
        count = len(self.anchors(network_size))
        for param, name, shape in (
            ("decoder.boxes", boxes_name, boxes_shape),
            ("decoder.scores", scores_name, scores_shape),
        ):
            if not dims_agree(shape[1], count):
                raise SpecError(
                    f"{param}: the model output {name!r} has {shape[1]} rows but decoder.anchors gives {count} anchors "
                    f"for a {network_size[0]}x{network_size[1]} input"
                )

    def decode_arrays(
        self, outputs: Mapping[str, Any], geometry: ResizeGeometry, score_threshold: float
    ) -> tuple[Any, Any, Any]:
        boxes_name, boxes_tensor = select_output(outputs, self.boxes, "decoder.boxes")
        scores_name, scores_tensor = select_output(outputs, self.scores, "decoder.scores")
        require_rank(boxes_name, boxes_tensor, (3, 4), "[B,N,4] or [B,N,1,4]")
        require_rank(scores_name, scores_tensor, (3,), "[B,N,C]")
        encodings = boxes_tensor[0].reshape(boxes_tensor.shape[1], -1)
        try:
            anchors = self.anchors(geometry.network_size)
        except SpecError as error:  # a dynamic-size model's input for this image: too large a frame, not a bad spec
            raise InferenceError(str(error)) from None
        if encodings.shape[1] < 4 or len(encodings) != len(anchors) or scores_tensor.shape[1] != len(anchors):
            raise InferenceError(
                f"outputs '{boxes_name}' {list(boxes_tensor.shape)} and '{scores_name}' {list(scores_tensor.shape)} "
                f"do not fit {len(anchors)} anchors with 4 box values each"
            )
        probabilities = activate(scores_tensor[0], self.activation, axis=1)
        if self.background_column is not None:
            probabilities = np.delete(probabilities, self.background_column, axis=1)
        require_probabilities(scores_name, probabilities, self.activation)
        if self.class_selection == "best":
            best_class = probabilities.argmax(axis=1)
            best = probabilities[np.arange(len(probabilities)), best_class]
            rows = np.flatnonzero(best >= score_threshold)
            classes = best_class[rows]
        else:
            rows, classes = np.nonzero(probabilities >= score_threshold)
        kept = encodings[rows]
        require_finite(boxes_name, kept)
        boxes = self.box_coder.decode(kept, anchors[rows])
        xyxy = to_xyxy(boxes, "cxcywh", True, geometry.network_size)
        return xyxy, probabilities[rows, classes], self._class_ids(scores_name, classes)
