"""Detection decoders on tiny ONNX graphs with known outputs, and the real CenterNet model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest

from onnx_builders import constant_outputs_model, run_model, softmax_model, yolo_head_model
from trt_perception.decoders import DetectionFilter, create_decoder, filter_detections
from trt_perception.decoders.detection import DetectionDecoder
from trt_perception.errors import InferenceError, SpecError
from trt_perception.geometry import ResizeGeometry

FIXTURES = Path(__file__).parent / "fixtures"
# A 480x640 camera image letterboxed into 512x512: scale 0.8, content 384x512, 64 rows of padding on top.
LETTERBOX = ResizeGeometry.letterbox((480, 640), (512, 512))
NETWORK_400x600 = ResizeGeometry.stretch((400, 600), (400, 600))


def detection_decoder(config: dict, num_classes: int | None = 80) -> DetectionDecoder:
    decoder = create_decoder("detection", config, num_classes)
    assert isinstance(decoder, DetectionDecoder)
    return decoder


def test_rows_letterboxed_boxes_map_back_to_source() -> None:
    rows = np.array(
        [
            [[100, 164, 300, 364, 0.9, 3], [0, 64, 512, 448, 0.5, 0], [10, 10, 20, 20, 0.1, 7]],
        ],
        np.float32,
    )
    outputs = run_model(
        constant_outputs_model({"tower_0/detections": rows, "tower_0/wh": np.zeros((1, 2), np.float32)})
    )
    decoder = detection_decoder(
        {
            "type": "rows",
            "output": "tower_0/detections",
            "columns": ["x1", "y1", "x2", "y2", "score", "class"],
        }
    )
    detections = decoder.decode(outputs, LETTERBOX, score_threshold=0.3)
    np.testing.assert_allclose(detections.scores, [0.9, 0.5])
    np.testing.assert_array_equal(detections.class_ids, [3, 0])
    # Source = (network - offset) / 0.8: the whole content maps to the whole 640x480 image.
    np.testing.assert_allclose(
        LETTERBOX.boxes_to_source(detections.boxes), [[125, 125, 375, 375], [0, 0, 640, 480]], atol=1e-4
    )


def test_rows_normalized_centre_size_with_skipped_column_and_no_class() -> None:
    # Columns: batch index (ignored), score, cx, cy, w, h, normalized to the 400x600 input.
    rows = np.array([[0, 0.8, 0.5, 0.25, 0.2, 0.1], [0, 0.2, 0.1, 0.1, 0.1, 0.1]], np.float32)
    outputs = run_model(constant_outputs_model({"rows": rows}))
    decoder = detection_decoder(
        {"type": "rows", "columns": {"score": 1, "cx": 2, "cy": 3, "w": 4, "h": 5}, "normalized": True}
    )
    detections = decoder.decode(outputs, NETWORK_400x600, score_threshold=0.5)
    np.testing.assert_allclose(detections.boxes, [[240, 80, 360, 120]], atol=1e-4)
    np.testing.assert_array_equal(detections.class_ids, [0])


def test_efficient_nms_tf_style_yxyx_normalized_one_based_truncated() -> None:
    """TF2 OD API export: float count, yxyx normalized boxes, float 1-based classes, padded rows."""
    outputs = run_model(
        constant_outputs_model(
            {
                "num_detections": np.array([2], np.float32),
                "detection_boxes": np.array(
                    [
                        [
                            [0.1, 0.2, 0.5, 0.6],
                            [0.0, 0.0, 1.0, 1.0],
                            [0.3, 0.3, 0.4, 0.4],
                            [0.0, 0.0, 0.0, 0.0],
                        ]
                    ],
                    np.float32,
                ),
                "detection_scores": np.array([[0.9, 0.4, 0.95, 0.0]], np.float32),  # row 2 is padding
                "detection_classes": np.array([[1, 18, 5, 0]], np.float32),
            }
        )
    )
    decoder = detection_decoder(
        {"type": "efficient_nms", "box_format": "yxyx", "normalized": True, "class_offset": 1}
    )
    detections = decoder.decode(outputs, NETWORK_400x600, score_threshold=0.3)
    np.testing.assert_allclose(detections.boxes, [[120, 40, 360, 200], [0, 0, 600, 400]], atol=1e-4)
    np.testing.assert_allclose(detections.scores, [0.9, 0.4])
    np.testing.assert_array_equal(detections.class_ids, [0, 17])


def test_efficient_nms_plugin_style_int_outputs() -> None:
    """TensorRT EfficientNMS plugin: int32 count [B,1], xyxy pixels, int32 classes."""
    outputs = {
        "num": np.array([[1]], np.int32),
        "boxes": np.array([[[10, 20, 30, 40], [1, 1, 2, 2]]], np.float32),
        "scores": np.array([[0.7, 0.9]], np.float32),
        "classes": np.array([[4, 2]], np.int32),
    }
    config = {
        "type": "efficient_nms",
        "num_detections": "num",
        "boxes": "boxes",
        "scores": "scores",
        "classes": "classes",
    }
    detections = detection_decoder(config).decode(outputs, NETWORK_400x600, 0.5)
    np.testing.assert_array_equal(detections.boxes, [[10, 20, 30, 40]])
    np.testing.assert_array_equal(detections.class_ids, [4])


def test_boxes_scores_classes_torchvision_dynamic_count() -> None:
    outputs = {
        "boxes": np.array([[5, 6, 50, 60], [0, 0, 10, 10], [1, 2, 3, 4]], np.float32),
        "scores": np.array([0.8, 0.1, 0.6], np.float32),
        "labels": np.array([1, 2, 91], np.int64),
    }
    detections = detection_decoder({"type": "boxes_scores_classes"}, 92).decode(outputs, NETWORK_400x600, 0.5)
    np.testing.assert_array_equal(detections.boxes, [[5, 6, 50, 60], [1, 2, 3, 4]])
    np.testing.assert_array_equal(detections.class_ids, [1, 91])
    empty = {
        "boxes": np.zeros((1, 0, 4), np.float32),
        "scores": np.zeros((1, 0), np.float32),
        "labels": np.zeros((1, 0), np.int64),
    }
    assert len(detection_decoder({"type": "boxes_scores_classes"}).decode(empty, NETWORK_400x600, 0.5)) == 0


@pytest.mark.parametrize(
    ("box_format", "normalized", "coded"),
    [
        ("xyxy", False, [60, 40, 180, 120]),
        ("yxyx", False, [40, 60, 120, 180]),
        ("cxcywh", False, [120, 80, 120, 80]),
        ("xywh", False, [60, 40, 120, 80]),
        ("xywh", True, [0.1, 0.1, 0.2, 0.2]),  # fractions of the 600x400 input
    ],
)
def test_box_codings(box_format, normalized, coded) -> None:
    outputs = {"boxes": np.array([coded], np.float32), "scores": np.ones(1, np.float32)}
    config = {"type": "boxes_scores_classes", "classes": None, "box_format": box_format, "normalized": normalized}
    detections = detection_decoder(config).decode(outputs, NETWORK_400x600, 0.5)
    np.testing.assert_allclose(detections.boxes, [[60, 40, 180, 120]], atol=1e-4)
    np.testing.assert_array_equal(detections.class_ids, [0])


# Three candidates (cx, cy, w, h in network pixels) and scores for 3 classes.
YOLO_BOXES = np.array([[[100, 100, 40, 20], [200, 50, 10, 10], [300, 300, 100, 50]]], np.float32)
YOLO_CLASS_SCORES = np.array([[[0.1, 0.9, 0.2], [0.3, 0.2, 0.1], [0.05, 0.6, 0.7]]], np.float32)


def test_yolov8_head() -> None:
    outputs = run_model(yolo_head_model(3, "v8"), {"boxes": YOLO_BOXES, "class_scores": YOLO_CLASS_SCORES})
    assert outputs["output0"].shape == (1, 7, 3)
    detections = detection_decoder({"type": "yolo"}, 3).decode(outputs, NETWORK_400x600, 0.5)
    np.testing.assert_allclose(detections.boxes, [[80, 90, 120, 110], [250, 275, 350, 325]])
    np.testing.assert_allclose(detections.scores, [0.9, 0.7])
    np.testing.assert_array_equal(detections.class_ids, [1, 2])


def test_yolov5_head_multiplies_objectness() -> None:
    objectness = np.array([[[0.5], [1.0], [1.0]]], np.float32)
    outputs = run_model(
        yolo_head_model(3, "v5"),
        {"boxes": YOLO_BOXES, "objectness": objectness, "class_scores": YOLO_CLASS_SCORES},
    )
    assert outputs["output0"].shape == (1, 3, 8)
    # Scores: 0.5 * 0.9 = 0.45, 1.0 * 0.3 (below 0.4, dropped), 1.0 * 0.7.
    detections = detection_decoder({"type": "yolo", "version": "v5"}, 3).decode(outputs, NETWORK_400x600, 0.4)
    np.testing.assert_allclose(detections.scores, [0.45, 0.7])
    np.testing.assert_array_equal(detections.class_ids, [1, 2])
    np.testing.assert_allclose(detections.boxes, [[80, 90, 120, 110], [250, 275, 350, 325]])


def test_yolo_version_from_shape() -> None:
    """Without labels the longer dimension is the candidates; with labels the class count decides."""
    rng = np.random.default_rng(0)
    boxes = rng.uniform(10, 50, size=(1, 8, 4)).astype(np.float32)
    scores = rng.uniform(size=(1, 8, 2)).astype(np.float32)
    v8 = run_model(yolo_head_model(2, "v8"), {"boxes": boxes, "class_scores": scores})  # [1, 6, 8]
    v5 = run_model(
        yolo_head_model(2, "v5"),
        {"boxes": boxes, "objectness": np.ones((1, 8, 1), np.float32), "class_scores": scores},
    )  # [1, 8, 7]
    for outputs in (v8, v5):
        detections = detection_decoder({"type": "yolo"}, None).decode(outputs, NETWORK_400x600, 0.0)
        np.testing.assert_allclose(detections.scores, scores[0].max(axis=1))
        np.testing.assert_array_equal(detections.class_ids, scores[0].argmax(axis=1))
    # A v8 head with fewer candidates than channels: [1, 84, 3] is recognised from 80 labels.
    few = {
        "output0": np.concatenate([YOLO_BOXES, np.zeros((1, 3, 80), np.float32)], axis=2).transpose(0, 2, 1)
    }
    few["output0"][0, 4 + 79, 0] = 0.8
    detections = detection_decoder({"type": "yolo"}, 80).decode(few, NETWORK_400x600, 0.5)
    np.testing.assert_array_equal(detections.class_ids, [79])


def test_yolo_shape_not_matching_labels() -> None:
    outputs = {"output0": np.zeros((1, 84, 8400), np.float32)}
    with pytest.raises(
        InferenceError,
        match=r"'output0' has shape \[1, 84, 8400\]; expected a YOLO head \[B,4\+20,N\] or \[B,N,5\+20\]",
    ):
        detection_decoder({"type": "yolo"}, 20).decode(outputs, NETWORK_400x600, 0.5)
    with pytest.raises(InferenceError, match=r"expected a YOLO head \[B,N,5\+80\]"):
        detection_decoder({"type": "yolo", "version": "v5"}, 80).decode(outputs, NETWORK_400x600, 0.5)


def test_detr_softmax_and_no_object() -> None:
    """Logits are logs of chosen probabilities, so the softmax is known exactly."""
    probabilities = np.array(
        [
            [0.6, 0.3, 0.1],  # class 0 at 0.6
            [0.1, 0.1, 0.8],  # mostly no-object: best real class only 0.1
            [0.25, 0.45, 0.3],  # class 1 at 0.45 although no-object is second best
        ],
        np.float32,
    )
    logits = np.log(probabilities)[None] + 3.0  # any constant shift leaves the softmax unchanged
    boxes = np.array([[[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 0.2, 0.2], [0.25, 0.75, 0.1, 0.2]]], np.float32)
    outputs = run_model(constant_outputs_model({"pred_logits": logits, "pred_boxes": boxes}))
    detections = detection_decoder({"type": "detr"}, 2).decode(outputs, NETWORK_400x600, 0.3)
    np.testing.assert_allclose(detections.scores, [0.6, 0.45], rtol=1e-5)
    np.testing.assert_array_equal(detections.class_ids, [0, 1])
    np.testing.assert_allclose(detections.boxes, [[0, 0, 600, 400], [120, 260, 180, 340]], atol=1e-3)


def test_detr_scores_match_onnx_softmax() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=4, size=(1, 20, 6)).astype(np.float32)
    boxes = rng.uniform(0.2, 0.6, size=(1, 20, 4)).astype(np.float32)
    reference = run_model(softmax_model(6), {"logits": logits})["probabilities"][0, :, :-1]
    detections = detection_decoder({"type": "detr"}, 5).decode(
        {"pred_logits": logits, "pred_boxes": boxes}, NETWORK_400x600, 0.0
    )
    np.testing.assert_allclose(detections.scores, reference.max(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(detections.class_ids, reference.argmax(axis=1))


def test_num_detections_that_is_not_one_count_per_image_is_named_at_load() -> None:
    shapes = {"num_detections": (1, 1), "detection_boxes": (1, 100, 4), "detection_scores": (1, 100),
              "detection_classes": (1, 100)}
    detection_decoder({"type": "efficient_nms"}).check_outputs(shapes, (300, 300))
    detection_decoder({"type": "efficient_nms"}).check_outputs({**shapes, "num_detections": (None,)}, (300, 300))
    with pytest.raises(SpecError, match=r"^decoder.num_detections: the model output 'detection_scores' has shape "
                                        r"\[1,100\]; expected one count per image: \[B\] or \[B,1\]"):
        detection_decoder({"type": "efficient_nms", "num_detections": "detection_scores"}).check_outputs(shapes, (300, 300))


def test_detr_logits_that_do_not_fit_the_labels_are_named_at_load() -> None:
    """A DETR whose logits had one column more or fewer than labels + no-object loaded; with more labels
    than classes nothing ever told (class indices stay below the label count)."""
    shapes = {"pred_logits": (1, 100, 92), "pred_boxes": (1, 100, 4)}
    detection_decoder({"type": "detr"}, 91).check_outputs(shapes, (800, 800))
    detection_decoder({"type": "detr", "class_offset": 1}, 90).check_outputs(shapes, (800, 800))
    detection_decoder({"type": "detr", "score_activation": "sigmoid"}, 92).check_outputs(shapes, (800, 800))
    detection_decoder({"type": "detr"}, None).check_outputs({"pred_logits": (1, None, None), "pred_boxes": (1, None, 4)}, None)
    with pytest.raises(SpecError, match=r"^decoder.logits: the model output 'pred_logits' has shape \[1,100,92\]; expected "
                                        r"\[B,Q,92 labels \+ class_offset 0 \+ 1 no-object\] \(score_activation softmax\)"):
        detection_decoder({"type": "detr"}, 92).check_outputs(shapes, (800, 800))
    with pytest.raises(SpecError, match=r"^decoder.logits: .* expected \[B,Q,91 labels \+ class_offset 0\] \(score_activation sigmoid\)"):
        detection_decoder({"type": "detr", "score_activation": "sigmoid"}, 91).check_outputs(shapes, (800, 800))
    with pytest.raises(SpecError, match=r"^decoder.boxes: the model output 'pred_boxes' has shape \[1,100,5\]; expected \[B,Q,4\]"):
        detection_decoder({"type": "detr"}, 91).check_outputs({**shapes, "pred_boxes": (1, 100, 5)}, (800, 800))


ROWS_CONFIG = {"type": "rows", "output": "det"}


@pytest.mark.parametrize(
    ("config", "outputs", "message"),
    [
        (
            ROWS_CONFIG,
            {"boxes": np.zeros((1, 2, 6))},
            "'det' .decoder.output. not found; available outputs: boxes",
        ),
        (
            ROWS_CONFIG,
            {"det": np.zeros((1, 1, 2, 6))},
            r"'det' has shape \[1, 1, 2, 6\]; expected \[N,K\] or \[B,N,K\]",
        ),
        (ROWS_CONFIG, {"det": np.zeros((1, 2, 5))}, "5 columns, but decoder.columns uses column 5"),
        (ROWS_CONFIG, {"det": np.array([[[0, 0, 1, 1, np.nan, 0]]])}, "'det' contains 1 NaN"),
        (ROWS_CONFIG, {"det": np.array([[[0, 0, np.inf, 1, 0.9, 0]]])}, "'det' contains 1 NaN or infinite"),
        (
            ROWS_CONFIG,
            {"det": np.array([[[0, 0, 1, 1, 0.9, 80]]])},
            "'det' gives class indices 80..80 .* within 0..79",
        ),
        (
            {"type": "efficient_nms"},
            {
                "num_detections": np.array([[5]]),
                "detection_boxes": np.zeros((1, 3, 4)),
                "detection_scores": np.zeros((1, 3)),
                "detection_classes": np.zeros((1, 3)),
            },
            "'num_detections' says 5 detections, but there are 3 boxes",
        ),
        # decoder.num_detections naming a per-box tensor: its first score (0.9) was read as 0 detections
        (
            {"type": "efficient_nms", "num_detections": "detection_scores"},
            {"detection_boxes": np.zeros((1, 3, 4)), "detection_scores": np.array([[0.9, 0.8, 0.7]]),
             "detection_classes": np.zeros((1, 3))},
            r"^output 'detection_scores' has shape \[1, 3\]; expected the number of detections, one value$",
        ),
        (
            {"type": "efficient_nms"},
            {"num_detections": np.array([1.5], np.float32), "detection_boxes": np.zeros((1, 3, 4)),
             "detection_scores": np.zeros((1, 3)), "detection_classes": np.zeros((1, 3))},
            r"^output 'num_detections' says 1.5 detections, not a whole number$",
        ),
        (
            {"type": "boxes_scores_classes"},
            {"boxes": np.zeros((3, 4)), "scores": np.zeros(2), "labels": np.zeros(3)},
            r"'scores' has shape \[2\]; expected 3 values, one per box of 'boxes'",
        ),
        (
            {"type": "boxes_scores_classes", "class_offset": 1},
            {"boxes": np.zeros((1, 4)), "scores": np.ones(1), "labels": np.zeros(1)},
            "'labels' gives class indices -1..-1 after decoder.class_offset 1",
        ),
        ({"type": "yolo"}, {"output0": np.zeros((1, 84))}, r"'output0' has shape \[1, 84\]"),
        # score and class columns swapped for a two-class model: class 1 read as score 1.0, the score 0.9 rounded to class 1
        (
            {"type": "rows", "columns": ["x1", "y1", "x2", "y2", "class", "score"]},
            {"detections": np.array([[[10, 10, 50, 50, 0.9, 1.0]]], np.float32)},
            r"^output 'detections' gives class indices that are not whole numbers \(e.g. 0.9\): it is not the class "
            r"index the spec says \(check decoder.columns or decoder.classes\)$",
        ),
        (
            {"type": "efficient_nms", "num_detections": None},
            {"detection_boxes": np.zeros((1, 1, 4), np.float32), "detection_scores": np.ones((1, 1), np.float32),
             "detection_classes": np.full((1, 1), 1e30, np.float32)},
            r"^output 'detection_classes' gives class indices 1e\+30..1e\+30, beyond any class index",
        ),
        (
            {"type": "detr"},
            {"pred_logits": np.zeros((1, 4, 81)), "pred_boxes": np.zeros((1, 5, 4))},
            r"'pred_boxes' has shape \[1, 5, 4\]; expected \[B,4,4\]",
        ),
    ],
)
def test_bad_outputs_raise_inference_error(config, outputs, message) -> None:
    with pytest.raises(InferenceError, match=message):
        detection_decoder(config).decode(outputs, NETWORK_400x600, 0.5)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"type": "retinanet"},
            "decoder.type: 'retinanet' is not one of efficient_nms, rows, boxes_scores_classes, yolo, detr, ssd, "
            "yolo_anchors, yolox, dfl",
        ),
        ({"type": "rows", "columns": {"x1": 0, "y1": 1, "x2": 2}}, "decoder.columns: needs box columns"),
        (
            {"type": "rows", "columns": {"x1": 0, "y1": 1, "x2": 2, "y2": 3}},
            "decoder.columns.score: required",
        ),
        (
            {"type": "rows", "columns": {"x1": 0, "y1": 1, "x2": 2, "y2": 3, "score": -1}},
            "decoder.columns.score: -1 is less than 0",
        ),
        (
            {"type": "rows", "columns": ["x1", "y1", "x2", "y2", "score", "scor"]},
            "decoder.columns.scor: unknown parameter",
        ),
        ({"type": "rows", "columns": ["x1", "x1"]}, "decoder.columns: expected distinct column names"),
        (
            {"type": "efficient_nms", "box_format": "xxyy"},
            "decoder.box_format: 'xxyy' is not one of xyxy, yxyx, cxcywh, xywh",
        ),
        ({"type": "efficient_nms", "normalized": "yes"}, "decoder.normalized: expected true or false"),
        ({"type": "efficient_nms", "class_offset": 0.5}, "decoder.class_offset: expected an integer"),
        ({"type": "yolo", "version": "v7"}, "decoder.version: 'v7' is not one of auto, v5, v8"),
        ({"type": "detr", "nms": True}, "decoder.nms: unknown parameter"),
    ],
)
def test_bad_config_raises_spec_error(config, message) -> None:
    with pytest.raises(SpecError, match=message):
        create_decoder("detection", config, 80)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_centernet_rows_on_quokka_match_annotation() -> None:
    """Real model: stretched to 512x512 RGB 0..255; the best box maps back onto the annotated quokka."""
    image = cv2.cvtColor(cv2.imread(str(FIXTURES / "images" / "quokka.jpg")), cv2.COLOR_BGR2RGB)
    geometry = ResizeGeometry.stretch(image.shape[:2], (512, 512))
    network_input = cv2.resize(image, (512, 512), interpolation=cv2.INTER_LINEAR).astype(np.float32)[None]
    session = onnxruntime.InferenceSession(
        str(FIXTURES / "models" / "centernet_mobilenetv3_coco.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, {session.get_inputs()[0].name: network_input}), strict=True))
    decoder = detection_decoder({"type": "rows", "output": "tower_0/detections"})
    detections = filter_detections(decoder.decode(outputs, geometry, 0.3), DetectionFilter(0.3, 0.45))
    assert len(detections) == 1
    annotation = json.loads((FIXTURES / "images" / "quokka_annotations.json").read_text())["bounding_boxes"][
        0
    ]
    expected = np.array([annotation[key] for key in ("x1", "y1", "x2", "y2")])
    assert box_iou(geometry.boxes_to_source(detections.boxes)[0], expected) >= 0.9
