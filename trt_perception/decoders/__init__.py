"""Output decoders: raw model outputs to label images or detections, chosen by the spec's ``decoder``.

``create_decoder(task, config, num_classes)`` picks the decoder named by ``config["type"]`` and
validates its parameters; errors are ``SpecError`` naming ``decoder.<key>``. Parameters (defaults in
brackets; ``output`` defaults to the model's only output):

Segmentation (labels are uint8, or uint16 beyond 256 classes)
  labels   class indices from the graph, [B,H,W] | [B,1,H,W] | [B,H,W,1]: ``output``
  logits   class scores: ``output``, ``layout`` [NCHW] | NHWC,
           ``upsample`` [after_argmax] | before_argmax (bilinear scores, then argmax)
  binary   one-channel map, label 1 where value > threshold: ``output``, ``threshold`` [0.5],
           ``activation`` [none] | sigmoid (output is a logit), ``upsample`` [after_threshold] | before_threshold
  db_text  DBNet text map, label 1 inside each text box (``decoders/text.py``): ``output``, ``box_threshold``
           [0.5] and the detection db_text keys

Detection (every type also takes ``class_offset`` [0], subtracted from the model's class index, and
``score_activation`` [none] | sigmoid (| softmax where listed): how score values become probabilities; a
score outside [0, 1] after it is an error, not a detection)
  efficient_nms         ``num_detections`` [num_detections] (null: all rows), ``boxes`` [detection_boxes],
                        ``scores`` [detection_scores], ``classes`` [detection_classes] (null: class 0),
                        ``box_format`` [xyxy] | yxyx | cxcywh | xywh, ``normalized`` [false]
  boxes_scores_classes  the same keys with torchvision defaults: boxes, scores, labels, no num_detections
  rows                  ``output``, ``columns`` [[x1, y1, x2, y2, score, class]] (list in column order,
                        null skips a column, or a mapping name -> index; boxes x1,y1,x2,y2 | cx,cy,w,h |
                        x1,y1,w,h; class optional), ``normalized`` [false]
  yolo                  ``output``, ``version`` [auto] | v5 | v8, ``normalized`` [false], ``extra_columns`` [0]
                        (trailing values per box to ignore, e.g. keypoints); needs host NMS
  detr                  ``logits`` [pred_logits], ``boxes`` [pred_boxes], ``score_activation`` [softmax] | sigmoid
  ssd                   raw SSD / RetinaNet / MediaPipe heads (``anchor_heads``): ``boxes``, ``scores``, ``anchors``
                        (``anchors.AnchorGenerator``: ssd | multiscale | mediapipe | file), ``box_coder``,
                        ``score_activation`` (+ softmax), ``background_column`` [null], ``class_selection`` [all] | best
  yolo_anchors          raw YOLO heads per stride with anchors (``grid_heads``): ``outputs``, ``strides``, ``anchors``,
                        ``version`` [v3] | v5, ``scale_x_y`` [1]
  yolox                 anchor-free YOLOX grid heads: ``outputs`` (per stride or concatenated), ``strides``
  dfl                   distribution heads (GFL, NanoDet, YOLOv8 raw): ``outputs``, ``scores``, ``strides``, ``bins``,
                        ``cell_offset`` [0], ``order``; grid heads also take ``class_selection`` [best] | all
                        and ``extra_columns`` [0]
  db_text               DBNet text map to text boxes as PaddleOCR does (``decoders/text.py``): ``output``,
                        ``threshold`` [0.3], ``unclip_ratio`` [1.5], ``min_size`` [3], ``max_candidates``
                        [1000], ``dilate`` [false]; the box score threshold is ``detection.score_threshold``
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trt_perception.decoders.anchor_heads import AnchorBoxDecoder
from trt_perception.decoders.detection import (
    DetectionDecoder,
    DetrDecoder,
    RowsDecoder,
    SeparateTensorsDecoder,
    YoloDecoder,
)
from trt_perception.decoders.grid_heads import DistributionDecoder, YoloAnchorDecoder, YoloxDecoder
from trt_perception.decoders.nms import DetectionFilter, filter_detections, nms
from trt_perception.decoders.params import DecoderParams
from trt_perception.decoders.segmentation import (
    BinaryDecoder,
    LabelsDecoder,
    LogitsDecoder,
    SegmentationDecoder,
    label_dtype,
)
from trt_perception.decoders.text import DbTextDecoder, DbTextRegionsDecoder
from trt_perception.errors import SpecError

__all__ = [
    "DECODERS",
    "DetectionDecoder",
    "DetectionFilter",
    "SegmentationDecoder",
    "create_decoder",
    "filter_detections",
    "label_dtype",
    "nms",
]

# Most label values a uint16 label image can hold.
MAX_SEGMENTATION_CLASSES = 65536

Factory = Callable[[DecoderParams, int | None], SegmentationDecoder | DetectionDecoder]

# Decoder types by task: `decoder.type` in a model spec.
DECODERS: dict[str, dict[str, Factory]] = {
    "segmentation": {
        "labels": LabelsDecoder.from_params,
        "logits": LogitsDecoder.from_params,
        "binary": BinaryDecoder.from_params,
        "db_text": DbTextRegionsDecoder.from_params,
    },
    "detection": {
        "efficient_nms": SeparateTensorsDecoder.efficient_nms_from_params,
        "rows": RowsDecoder.from_params,
        "boxes_scores_classes": SeparateTensorsDecoder.boxes_scores_classes_from_params,
        "yolo": YoloDecoder.from_params,
        "detr": DetrDecoder.from_params,
        "ssd": AnchorBoxDecoder.from_params,
        "yolo_anchors": YoloAnchorDecoder.from_params,
        "yolox": YoloxDecoder.from_params,
        "dfl": DistributionDecoder.from_params,
        "db_text": DbTextDecoder.from_params,
    },
}


def create_decoder(
    task: str, config: Mapping[str, Any], num_classes: int | None, base_dir: Path | None = None
) -> SegmentationDecoder | DetectionDecoder:
    """The decoder for ``task`` described by ``config`` (``type`` plus that decoder's parameters).

    ``num_classes`` is the number of labels in the spec (None when it has none); decoders use it to
    check class indices and to choose the label image dtype. Relative file paths in ``config`` (an
    anchors file) resolve from ``base_dir`` (the spec's folder).
    """
    if task not in DECODERS:
        raise SpecError(f"task: {task!r} is not one of {', '.join(DECODERS)}")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise SpecError(f"labels: expected at least one label, got {num_classes!r} classes")
    if task == "segmentation" and num_classes is not None and num_classes > MAX_SEGMENTATION_CLASSES:
        raise SpecError(
            f"labels: {num_classes} classes; label images hold at most {MAX_SEGMENTATION_CLASSES}"
        )
    params = DecoderParams(config, base_dir=base_dir)
    kind = params.string("type", choices=tuple(DECODERS[task]))
    decoder = DECODERS[task][kind](params, num_classes)
    params.finish()
    return decoder
