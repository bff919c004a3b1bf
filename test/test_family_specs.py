"""The model-family specs in config/models load, and run end to end through the Pipeline on tiny
ONNX graphs that have each family's tensor names, shapes and layouts (served by configuration).

Segmentation graphs score each class by one channel of the preprocessed input (class 0: red,
1: green, 2: blue, the rest far below), so on an image of red / green / blue stripes the expected
labels follow from the image alone. Detection graphs emit fixed outputs in the family's format; the
expected source-pixel boxes are computed here from the format's definition.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_builders import build_model
from trt_perception.pipeline import Pipeline
from trt_perception.results import DetectionResult, SegmentationResult
from trt_perception.spec import ModelSpec, load_model_spec

FAMILY_SPECS = [
    "mosaic_cityscapes",
    "deeplabv3_pascal",
    "segformer_b0_cityscapes",
    "ssd_mobilenet_v2_coco",
    "faster_rcnn_resnet50_coco",
    "yolov8n_coco",
    "detr_resnet50_coco",
]


@pytest.mark.parametrize("name", FAMILY_SPECS)
def test_family_spec_loads_with_labels_and_provenance_comment(name: str) -> None:
    spec = load_model_spec(name)
    assert spec.name == name
    assert spec.labels is not None and len(spec.labels) >= 19
    assert spec.source is not None
    text = spec.source.read_text()
    assert "Source:" in text and "Tensors:" in text


def stripes(height: int, width: int) -> np.ndarray:
    """RGB image: left third red, middle third green, right third blue."""
    image = np.zeros((height, width, 3), np.uint8)
    thirds = np.array_split(np.arange(width), 3)
    for channel, columns in enumerate(thirds):
        image[:, columns, channel] = 255
    return image


def expected_stripe_labels(height: int, width: int) -> np.ndarray:
    labels = np.zeros((height, width), np.int64)
    for channel, columns in enumerate(np.array_split(np.arange(width), 3)):
        labels[:, columns] = channel
    return labels


def class_scores_nodes(spec: ModelSpec, num_classes: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes turning the NCHW-or-NHWC input into NCHW ``scores`` [1,C,H,W]: class c = channel c (c < 3)."""
    nodes = []
    current = spec.input.name or "input"
    if spec.input.layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [current], ["nchw"], perm=[0, 3, 1, 2]))
        current = "nchw"
    weights = np.zeros((num_classes, 3, 1, 1), np.float32)
    for channel in range(3):
        weights[channel, channel] = 1.0
    bias = np.where(np.arange(num_classes) < 3, 0.0, -1000.0).astype(np.float32)
    nodes.append(helper.make_node("Conv", [current, "class_weights", "class_bias"], ["scores"]))
    return nodes, [numpy_helper.from_array(weights, "class_weights"), numpy_helper.from_array(bias, "class_bias")]


def segmentation_graph(spec: ModelSpec) -> onnx.ModelProto:
    """A graph with the family's input and output tensors, computing stripe classes."""
    num_classes = len(spec.labels or ())
    height, width = spec.input.size  # type: ignore[misc]
    input_shape = [1, 3, height, width] if spec.input.layout == "NCHW" else [1, height, width, 3]
    nodes, initializers = class_scores_nodes(spec, num_classes)
    decoder = spec.decoder
    if decoder["type"] == "labels":
        output = decoder.get("output", "labels")
        nodes.append(helper.make_node("ArgMax", ["scores"], ["argmax"], axis=1, keepdims=0))
        nodes.append(helper.make_node("Cast", ["argmax"], [output], to=TensorProto.INT32))
        outputs = {output: (TensorProto.INT32, [1, height, width])}
    else:  # logits at 1/4 resolution (SegFormer)
        output = decoder["output"]
        nodes.append(helper.make_node("AveragePool", ["scores"], [output], kernel_shape=[4, 4], strides=[4, 4]))
        outputs = {output: (TensorProto.FLOAT, [1, num_classes, height // 4, width // 4])}
    return build_model(nodes, {spec.input.name or "input": input_shape}, outputs, initializers)


def with_model(spec: ModelSpec, model: onnx.ModelProto, folder: Path) -> ModelSpec:
    path = folder / f"{spec.name}.onnx"
    onnx.save(model, path)
    return dataclasses.replace(spec, model=path, engine=None, backend="onnxruntime")


@pytest.mark.parametrize("name", ["mosaic_cityscapes", "deeplabv3_pascal", "segformer_b0_cityscapes"])
def test_segmentation_family_runs_end_to_end(name: str, tmp_path: Path) -> None:
    spec = load_model_spec(name)
    pipeline = Pipeline.from_spec(with_model(spec, segmentation_graph(spec), tmp_path))
    try:
        height, width = 480, 640
        result = pipeline.run(stripes(height, width), "RGB")
    finally:
        pipeline.close()
    assert isinstance(result, SegmentationResult)
    assert result.labels.shape == (height, width) and result.labels.dtype == np.uint8
    expected = expected_stripe_labels(height, width)
    margin = 24  # resize blur at the stripe borders
    for border in (width // 3, 2 * width // 3):
        expected[:, border - margin : border + margin] = -1
    known = expected >= 0
    np.testing.assert_array_equal(result.labels[known], expected[known])
    assert [result.class_names[i] for i in (0, 1, 2)] == list((spec.labels or ())[:3])


def constant_graph(spec: ModelSpec, input_shape: list[int | str], outputs: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The family's input (unused) and fixed outputs."""
    nodes = [
        helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, f"{name}_value"))
        for name, array in outputs.items()
    ]
    declared = {name: (helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)) for name, a in outputs.items()}
    return build_model(nodes, {spec.input.name or "input": input_shape}, declared)


def efficient_nms_outputs() -> dict[str, np.ndarray]:
    """Two valid detections (yxyx normalized) and one beyond ``num_detections``."""
    boxes = np.zeros((1, 100, 4), np.float32)
    scores = np.zeros((1, 100), np.float32)
    classes = np.zeros((1, 100), np.int32)
    boxes[0, 0], scores[0, 0], classes[0, 0] = (0.1, 0.2, 0.5, 0.6), 0.9, 17
    boxes[0, 1], scores[0, 1], classes[0, 1] = (0.5, 0.5, 0.9, 0.7), 0.6, 0
    boxes[0, 2], scores[0, 2], classes[0, 2] = (0.0, 0.0, 1.0, 1.0), 0.95, 2  # not counted
    return {
        "num_detections": np.array([[2]], np.int32),
        "detection_boxes": boxes,
        "detection_scores": scores,
        "detection_classes": classes,
    }


def run_detection(spec: ModelSpec, model: onnx.ModelProto, folder: Path, height: int, width: int) -> DetectionResult:
    pipeline = Pipeline.from_spec(with_model(spec, model, folder))
    try:
        result = pipeline.run(np.full((height, width, 3), 90, np.uint8), "RGB")
    finally:
        pipeline.close()
    assert isinstance(result, DetectionResult)
    return result


def test_ssd_fixed_shape_efficient_nms(tmp_path: Path) -> None:
    spec = load_model_spec("ssd_mobilenet_v2_coco")
    model = constant_graph(spec, [1, 300, 300, 3], efficient_nms_outputs())
    result = run_detection(spec, model, tmp_path, 480, 640)
    # Stretched input: normalized coordinates scale straight to the source size.
    np.testing.assert_allclose(
        result.detections.boxes,
        [[0.2 * 640, 0.1 * 480, 0.6 * 640, 0.5 * 480], [0.5 * 640, 0.5 * 480, 0.7 * 640, 0.9 * 480]],
        atol=0.01,
    )
    assert result.names() == ["dog", "person"]
    np.testing.assert_allclose(result.detections.scores, [0.9, 0.6])


def test_faster_rcnn_keep_aspect_ratio_efficient_nms(tmp_path: Path) -> None:
    spec = load_model_spec("faster_rcnn_resnet50_coco")
    model = constant_graph(spec, [1, 640, 640, 3], efficient_nms_outputs())
    result = run_detection(spec, model, tmp_path, 960, 1280)
    # 1280x960 scaled by 0.5 into the top-left 640x480 of the 640x640 input: normalized values are
    # fractions of 640 network pixels, i.e. of 1280 source pixels in both directions.
    np.testing.assert_allclose(
        result.detections.boxes, [[0.2 * 1280, 0.1 * 1280, 0.6 * 1280, 0.5 * 1280], [640, 640, 0.7 * 1280, 960]],
        atol=0.01,
    )
    assert result.names() == ["dog", "person"]


def test_yolov8_letterbox_raw_head(tmp_path: Path) -> None:
    spec = load_model_spec("yolov8n_coco")
    head = np.zeros((1, 84, 8400), np.float32)
    head[0, :4, 0] = (320, 320, 100, 200)  # cx, cy, w, h in network pixels
    head[0, 4 + 2, 0] = 0.8  # car
    head[0, :4, 1] = (322, 322, 100, 200)  # overlaps the first: removed by NMS
    head[0, 4 + 2, 1] = 0.7
    head[0, :4, 2] = (100, 200, 40, 40)
    head[0, 4 + 0, 2] = 0.1  # below the 0.25 score threshold
    model = constant_graph(spec, [1, 3, 640, 640], {"output0": head})
    result = run_detection(spec, model, tmp_path, 720, 1280)
    # 1280x720 scaled by 0.5 to 640x360, centred vertically: 140 px padding on top.
    np.testing.assert_allclose(
        result.detections.boxes, [[270 / 0.5, (220 - 140) / 0.5, 370 / 0.5, (420 - 140) / 0.5]], atol=0.01
    )
    assert result.names() == ["car"]


def test_detr_dynamic_size_set_prediction(tmp_path: Path) -> None:
    spec = load_model_spec("detr_resnet50_coco")
    logits = np.full((1, 100, 92), -10.0, np.float32)
    logits[0, :, 91] = 10.0  # "no object" everywhere ...
    logits[0, 0, 91], logits[0, 0, 1] = -10.0, 10.0  # ... except query 0: person
    logits[0, 1, 91], logits[0, 1, 18] = -10.0, 10.0  # query 1: dog (COCO id 18)
    boxes = np.full((1, 100, 4), 0.5, np.float32)
    boxes[0, 0] = (0.5, 0.5, 0.5, 0.25)
    boxes[0, 1] = (0.25, 0.75, 0.1, 0.2)
    model = constant_graph(spec, [1, 3, "height", "width"], {"logits": logits, "pred_boxes": boxes})
    result = run_detection(spec, model, tmp_path, 480, 640)
    # The whole network input is the resized image: normalized boxes scale to the source size.
    np.testing.assert_allclose(
        result.detections.boxes, [[160, 180, 480, 300], [0.2 * 640, 0.65 * 480, 0.3 * 640, 0.85 * 480]], atol=1.0
    )
    assert result.names() == ["person", "dog"]
