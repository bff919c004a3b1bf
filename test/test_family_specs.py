"""The model-family specs in config/models load, and run end to end through the Pipeline on tiny
ONNX graphs that have each exporter's tensor names, shapes, layouts, value ranges and class offsets.

Segmentation: the graphs and the expected input tensors are written here from each exporter's
documented conventions (torchvision, TF DeepLab frozen graphs, the seed documents in
shared/seeds/), never read from the specs. Each graph classifies every pixel with the same fixed
random 1x1 "convolution" of its input as the exporter delivers it (after undoing nothing), so the
labels come out as the test expects only when the spec feeds exactly the documented tensor: colour
order, value range, normalization, layout and size. Compared at network resolution (no label
resizing in the comparison). Detection graphs emit fixed outputs in the family's format; the
expected source-pixel boxes are computed here from the format's definition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_builders import OPSET, build_model
from trt_perception.pipeline import Pipeline
from trt_perception.results import DetectionResult, SegmentationResult
from trt_perception.spec import ModelSpec, load_model_spec

IMAGES = Path(__file__).parent / "fixtures" / "images"
SHARED_LABELS = Path(__file__).parent.parent / "config" / "models"

# name -> (number of classes, first label, last label) as each model's label set defines them
SEGMENTATION_FAMILIES = {
    "mosaic_cityscapes": (19, "road", "bicycle"),
    "deeplabv3_torchvision_voc": (21, "background", "tvmonitor"),
    "deeplabv3_tf_voc": (21, "background", "tvmonitor"),
    "segformer_b0_cityscapes": (19, "road", "bicycle"),
    "deeplabv3_sidewalk": (7, "general_obstacle", "zebra_crossing"),
    "segformer_b4_sidewalk": (35, "unlabeled", "void-unclear"),
}
DETECTION_FAMILIES = [
    "ssd_mobilenet_v2_coco",
    "faster_rcnn_resnet50_coco",
    "yolov8n_coco",
    "detr_resnet50_coco",
]


@pytest.mark.parametrize("name", [*SEGMENTATION_FAMILIES, *DETECTION_FAMILIES])
def test_family_spec_loads_with_labels_and_provenance_comment(name: str) -> None:
    spec = load_model_spec(name)
    assert spec.name == name
    assert spec.labels is not None
    if name in SEGMENTATION_FAMILIES:
        count, first, last = SEGMENTATION_FAMILIES[name]
        assert (len(spec.labels), spec.labels[0], spec.labels[-1]) == (count, first, last)
    else:
        assert len(spec.labels) >= 19
    assert spec.source is not None
    text = spec.source.read_text()
    assert "Source:" in text and "Tensors:" in text


# --------------------------------------------------------------------------- exporters' tensors

IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def torchvision_input(bgr: np.ndarray) -> np.ndarray:
    """torchvision DeepLabv3 weights' transforms: short side to 520 (long side int(520 * long / short)),
    RGB, /255, ImageNet mean/std, NCHW float32."""
    height, width = bgr.shape[:2]
    scale = 520 / min(height, width)
    resized = cv2.resize(bgr, (int(width * scale), int(height * scale)), interpolation=cv2.INTER_LINEAR)
    rgb = resized[:, :, ::-1] / 255.0
    return ((rgb - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)


def tf_deeplab_input(bgr: np.ndarray) -> np.ndarray:
    """TF DeepLab frozen graph, as DeepLab's demo feeds it: long side to 513 (sizes truncated), RGB
    uint8 NHWC (the graph normalizes itself)."""
    height, width = bgr.shape[:2]
    scale = 513 / max(height, width)
    resized = cv2.resize(bgr, (int(width * scale), int(height * scale)), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized[:, :, ::-1])[None]


def mosaic_input(bgr: np.ndarray) -> np.ndarray:
    """MOSAIC (seed 000): 2048x1024 stretched, RGB, (x - 127.5) / 127.5, NCHW float32."""
    rgb = cv2.resize(bgr, (2048, 1024), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    return ((rgb - 127.5) / 127.5).transpose(2, 0, 1)[None].astype(np.float32)


def segformer_cityscapes_input(bgr: np.ndarray) -> np.ndarray:
    """SegformerImageProcessor (cityscapes 1024): 1024x1024 stretched, RGB, /255, ImageNet mean/std, NCHW."""
    rgb = cv2.resize(bgr, (1024, 1024), interpolation=cv2.INTER_LINEAR)[:, :, ::-1] / 255.0
    return ((rgb - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)


def sidewalk_deeplab_input(bgr: np.ndarray) -> np.ndarray:
    """Seed 002: cv2.imread's BGR, INTER_AREA to 576x320, /255, normalise_input, NHWC float32."""
    image = cv2.resize(bgr, (576, 320), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    mean = np.mean(image, keepdims=True)
    rsd = 1.0 / np.sqrt(np.mean(np.square(image), keepdims=True) - np.square(mean))
    rsd = np.minimum(rsd, 3 * np.prod(image.shape))
    return np.clip(0.2 * ((image - mean) * rsd) + 0.5, 0.0, 1.0).astype(np.float32)[None]


def segformer_sidewalk_input(bgr: np.ndarray) -> np.ndarray:
    """Seed 003: cv2.imread's BGR, cv::resize to 512x512 (INTER_LINEAR), then jetson-inference's
    cudaTensorNormMeanBGR on the BGR8 image: each pixel's bytes swapped (planes R, G, B), range
    0..1, mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225) per plane in that order, NCHW."""
    image = cv2.resize(bgr, (512, 512), interpolation=cv2.INTER_LINEAR)[:, :, ::-1] / 255.0
    return ((image - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Exporter:
    """What an exporter's graph looks like from outside."""

    input_name: str
    layout: str  # NCHW | NHWC
    input_type: int  # TensorProto element type
    input_shape: list[int | str]
    output_name: str
    output: str  # labels_int64 | logits | logits_quarter
    num_classes: int
    reference_input: Callable[[np.ndarray], np.ndarray]


EXPORTERS = {
    "deeplabv3_torchvision_voc": Exporter(
        "input", "NCHW", TensorProto.FLOAT, [1, 3, "height", "width"], "out", "logits", 21, torchvision_input
    ),
    "deeplabv3_tf_voc": Exporter(
        "ImageTensor:0", "NHWC", TensorProto.UINT8, [1, "height", "width", 3], "SemanticPredictions:0",
        "labels_int64", 21, tf_deeplab_input,
    ),
    "mosaic_cityscapes": Exporter(
        "inputs_0", "NCHW", TensorProto.FLOAT, [1, 3, 1024, 2048], "Identity", "labels_int64", 19, mosaic_input
    ),
    "segformer_b0_cityscapes": Exporter(
        "pixel_values", "NCHW", TensorProto.FLOAT, [1, 3, 1024, 1024], "logits", "logits_quarter", 19,
        segformer_cityscapes_input,
    ),
    "deeplabv3_sidewalk": Exporter(
        "model/image:0", "NHWC", TensorProto.FLOAT, [1, 320, 576, 3],
        "model/semantic_segmentation/semantic_segmentation/ArgMax:0", "labels_int64", 7, sidewalk_deeplab_input,
    ),
    "segformer_b4_sidewalk": Exporter(
        "pixel_values", "NCHW", TensorProto.FLOAT, [1, 3, 512, 512], "3071", "logits_quarter", 35,
        segformer_sidewalk_input,
    ),
}


def classifier_weights(exporter: Exporter) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random per-pixel class scores ``w @ x + b`` scaled to the input's value range."""
    rng = np.random.default_rng(11)
    weights = rng.normal(size=(exporter.num_classes, 3)).astype(np.float32)
    bias = rng.normal(size=exporter.num_classes).astype(np.float32)
    if exporter.input_type == TensorProto.UINT8:
        bias *= 128
    return weights, bias


def exporter_graph(exporter: Exporter) -> onnx.ModelProto:
    """The exporter's input and output tensors around the fixed per-pixel classifier."""
    weights, bias = classifier_weights(exporter)
    nodes, current = [], exporter.input_name
    if exporter.input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [current], ["as_float"], to=TensorProto.FLOAT))
        current = "as_float"
    if exporter.layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [current], ["nchw"], perm=[0, 3, 1, 2]))
        current = "nchw"
    nodes.append(helper.make_node("Conv", [current, "class_weights", "class_bias"], ["scores"]))
    initializers = [
        numpy_helper.from_array(weights[:, :, None, None], "class_weights"),
        numpy_helper.from_array(bias, "class_bias"),
    ]
    if exporter.output == "labels_int64":
        nodes.append(helper.make_node("ArgMax", ["scores"], [exporter.output_name], axis=1, keepdims=0))
        shape = [1, *exporter.input_shape[1:3]] if exporter.layout == "NHWC" else [1, *exporter.input_shape[2:]]
        declared = (TensorProto.INT64, shape)
    elif exporter.output == "logits":
        nodes.append(helper.make_node("Identity", ["scores"], [exporter.output_name]))
        declared = (TensorProto.FLOAT, [1, exporter.num_classes, "height", "width"])
    else:  # logits at 1/4 of the input resolution
        nodes.append(helper.make_node("AveragePool", ["scores"], [exporter.output_name], kernel_shape=[4, 4], strides=[4, 4]))
        declared = (TensorProto.FLOAT, [1, exporter.num_classes, exporter.input_shape[2] // 4, exporter.input_shape[3] // 4])
    graph = helper.make_graph(
        nodes, "exporter", [helper.make_tensor_value_info(exporter.input_name, exporter.input_type, exporter.input_shape)],
        [helper.make_tensor_value_info(exporter.output_name, *declared)], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def expected_labels(exporter: Exporter, tensor: np.ndarray) -> np.ndarray:
    """The graph's labels for the exporter's documented input tensor, computed with numpy / OpenCV."""
    weights, bias = classifier_weights(exporter)
    pixels = tensor[0].astype(np.float64)
    channels_last = pixels if exporter.layout == "NHWC" else pixels.transpose(1, 2, 0)
    scores = channels_last @ weights.T.astype(np.float64) + bias
    if exporter.output == "logits_quarter":  # 4x4 means, then bilinear back to the input size
        height, width = scores.shape[:2]
        quarter = scores.reshape(height // 4, 4, width // 4, 4, -1).mean(axis=(1, 3)).astype(np.float32)
        resized = [cv2.resize(np.ascontiguousarray(quarter[:, :, c]), (width, height), interpolation=cv2.INTER_LINEAR)
                   for c in range(quarter.shape[2])]
        scores = np.stack(resized, axis=2)
    return np.argmax(scores, axis=2)


def with_model(spec: ModelSpec, model: onnx.ModelProto, folder: Path) -> ModelSpec:
    path = folder / f"{spec.name}.onnx"
    onnx.save(model, path)
    return dataclasses.replace(spec, model=path, engine=None, backend="onnxruntime")


@pytest.mark.parametrize("name", list(EXPORTERS))
def test_segmentation_spec_feeds_the_exporters_documented_tensor(name: str, tmp_path: Path) -> None:
    exporter = EXPORTERS[name]
    spec = dataclasses.replace(load_model_spec(name), output_resolution="network")
    bgr = cv2.imread(str(IMAGES / "motorcycle_left.png"), cv2.IMREAD_COLOR)
    pipeline = Pipeline.from_spec(with_model(spec, exporter_graph(exporter), tmp_path), intra_op_threads=1)
    try:
        result = pipeline.run(bgr, "BGR")
    finally:
        pipeline.close()
    assert isinstance(result, SegmentationResult)
    tensor = exporter.reference_input(bgr)
    expected = expected_labels(exporter, tensor)
    assert result.labels.shape == expected.shape  # the exporter's network size
    agreement = np.mean(result.labels == expected)
    assert agreement >= 0.995, f"{name}: {agreement:.4f} of the labels agree"
    assert len(np.unique(expected)) >= 3  # the classifier really separates the image's pixels


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


# Boxes across the left image edge (network xyxy, class, score): a car pair whose overlap is 0.8 as
# predicted and 0.4 clipped, a person pair 0.25 as predicted and 1.0 clipped.
EDGE_BOXES = [([-40, 300, 20, 340], 2, 0.9), ([-40, 300, 8, 340], 2, 0.8),
              ([-100, 400, 20, 440], 0, 0.9), ([-10, 400, 20, 440], 0, 0.8)]


def edge_boxes_yolov8_spec(folder: Path) -> ModelSpec:
    """yolov8n_coco over a graph whose raw head holds EDGE_BOXES."""
    spec = load_model_spec("yolov8n_coco")
    head = np.zeros((1, 84, 8400), np.float32)
    for column, ((x1, y1, x2, y2), class_id, score) in enumerate(EDGE_BOXES):
        head[0, :4, column] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        head[0, 4 + class_id, column] = score
    return with_model(spec, constant_graph(spec, [1, 3, 640, 640], {"output0": head}), folder)


def test_yolo_nms_runs_on_unclipped_boxes_then_clips_as_ultralytics_and_opencv_do(tmp_path: Path) -> None:
    """Boxes that cross the image edge: Ultralytics (and OpenCV's Darknet sample) run NMS on the boxes
    as predicted and clip the kept ones afterwards; clipping first changes their overlap. Reference:
    cv2.dnn.NMSBoxesBatched on the unclipped source boxes (mapped by hand), then np.clip."""
    network = EDGE_BOXES
    pipeline = Pipeline.from_spec(edge_boxes_yolov8_spec(tmp_path))
    result = pipeline.run(np.full((720, 1280, 3), 90, np.uint8), "RGB")
    pipeline.close()
    assert isinstance(result, DetectionResult)

    # 1280x720 scaled by 0.5 to 640x360, centred vertically: 140 px padding on top
    source = np.array([[x1 / 0.5, (y1 - 140) / 0.5, x2 / 0.5, (y2 - 140) / 0.5] for (x1, y1, x2, y2), _, _ in network])
    kept = cv2.dnn.NMSBoxesBatched([[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in source.tolist()],
                                   [score for _, _, score in network], [c for _, c, _ in network], 0.25, 0.45)
    kept = sorted(np.asarray(kept).ravel().tolist(), key=lambda index: -network[index][2])
    expected = np.clip(source[kept], 0, [1280, 720, 1280, 720])
    assert sorted(kept) == [0, 2, 3]  # the clipped-first order would have kept 0, 1 and 2
    order = np.lexsort((result.detections.boxes[:, 1], -result.detections.scores))
    expected_order = np.lexsort((expected[:, 1], -np.array([network[i][2] for i in kept])))
    np.testing.assert_allclose(result.detections.boxes[order], expected[expected_order], atol=0.01)
    assert sorted(result.names()) == ["car", "person", "person"]


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
