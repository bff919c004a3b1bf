"""The bundled specs of the seed documents' detectors (shared/seeds/), each run on a small ONNX graph built
from what its DOCUMENT says: tensor names, layouts and value conventions are written out here from the
documents and the standards they cite, not read from the specs.

Each graph plants one detection whose score the graph computes from the input image (mean of one
channel over a corner patch), so a wrong colour order, layout or scaling in the spec loses it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_builders import build_model
from trt_perception.backends.onnxruntime import OnnxRuntimeBackend
from trt_perception.errors import ModelLoadError
from trt_perception.pipeline import Pipeline
from trt_perception.results import DetectionResult
from trt_perception.spec import load_model_spec

RED, GREEN, BLUE = 200, 50, 10  # the test image's RGB colour


def planted_graph(
    input_name: str,
    input_shape: list[int],
    channel_axis: int,
    constants: dict[str, np.ndarray],
    score_output: str,
    score_index: tuple[int, ...],
    gain: float,
    bias: float,
) -> onnx.ModelProto:
    """Fixed outputs, except ``score_output[score_index]`` = gain * mean(input channel 0 over an 8x8 corner) + bias."""
    spatial = [axis for axis in (1, 2, 3) if axis != channel_axis]
    ints = lambda name, values: numpy_helper.from_array(np.array(values, np.int64), name)  # noqa: E731
    base = constants[score_output].copy()
    base[score_index] = 0.0
    mask = np.zeros_like(base)
    mask[score_index] = 1.0
    initializers = [
        ints("starts", [0, 0, 0]),
        ints("ends", [1, 8, 8]),
        ints("axes", [channel_axis, *spatial]),
        numpy_helper.from_array(np.float32(gain), "gain"),
        numpy_helper.from_array(np.float32(bias), "bias"),
        numpy_helper.from_array(mask, "mask"),
        numpy_helper.from_array(base, "base"),
    ]
    nodes = [
        helper.make_node("Slice", [input_name, "starts", "ends", "axes"], ["patch"]),
        helper.make_node("ReduceMean", ["patch"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "gain"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["value"]),
        helper.make_node("Mul", ["mask", "value"], ["planted"]),
        helper.make_node("Add", ["base", "planted"], [score_output]),
    ]
    for name, array in constants.items():
        if name != score_output:
            nodes.append(
                helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, f"{name}_value"))
            )
    declared = {name: (helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)) for name, a in constants.items()}
    return build_model(nodes, {input_name: input_shape}, declared, initializers)


def run_bundled(spec_name: str, model: onnx.ModelProto, folder: Path, height: int, width: int) -> DetectionResult:
    """The bundled spec as written, with its model file replaced by ``model``, on a uniform RGB image."""
    path = folder / f"{spec_name}.onnx"
    onnx.save(model, path)
    spec = dataclasses.replace(load_model_spec(spec_name), model=path, backend="onnxruntime")
    pipeline = Pipeline.from_spec(spec, intra_op_threads=1)
    try:
        image = np.empty((height, width, 3), np.uint8)
        image[:] = (RED, GREEN, BLUE)
        result = pipeline.run(image, "RGB")
    finally:
        pipeline.close()
    assert isinstance(result, DetectionResult)
    return result


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# --------------------------------------------------------------------------- 002: RetinaNet before NMS


def test_seed_002_retinanet_regression_and_classification_decoded_with_anchors(tmp_path):
    """002: tf2onnx `--inputs model/image:0 --outputs model/object_detection/box_predictor/regression:0,
    .../classification:0`; the input as the document's segmenter on the same camera: [1,320,576,3], BGR as
    cv2.imread gives it, /255. RetinaNet anchors (TF OD API multiscale generator: levels 3..7, base 4 * 2**l,
    aspect ratios 1, 2, 0.5 outer, 2 scales per octave inner, centres (i + 0.5) * 2**l on sides the stride
    divides, else i * 2**l): per level ceil(320/s) x ceil(576/s) cells x 6."""
    cells = [(math.ceil(320 / 2**level), math.ceil(576 / 2**level)) for level in range(3, 8)]
    count = sum(h * w * 6 for h, w in cells)
    assert count == 23040
    classes = 7
    # Plant at level 4 (stride 16), row 5, column 10, aspect 1 / scale 1 (box 0 of the cell): a 64 px square
    # centred on (10.5 * 16, 5.5 * 16) = (168, 88); zero encodings give the anchor itself.
    index = cells[0][0] * cells[0][1] * 6 + (5 * cells[1][1] + 10) * 6
    regression = np.zeros((1, count, 4), np.float32)
    regression[0, index] = [0.0, 0.0, 5 * math.log(1.5), 0.0]  # th: height x exp(th / 5) = 1.5 x 64
    classification = np.full((1, count, classes), -10.0, np.float32)
    names = (
        "model/object_detection/box_predictor/regression:0",
        "model/object_detection/box_predictor/classification:0",
    )
    outputs = dict(zip(names, (regression, classification)))

    def run(gain: float, bias: float) -> DetectionResult:
        """The planted logit is gain x mean(channel 0) + bias."""
        model = planted_graph("model/image:0", [1, 320, 576, 3], 3, outputs, names[1], (0, index, 3), gain, bias)
        return run_bundled("sidewalk_retinanet", model, tmp_path, 640, 1152)

    # 8 x mean(channel 0) - 4: channel 0 is blue (10/255) in BGR, no detection; red (200/255) would give 0.9.
    assert len(run(8.0, -4.0).detections) == 0, "channel 0 must be blue (BGR)"
    result = run(-8.0, 4.0)
    score = 1 / (1 + math.exp(-(4.0 - 8.0 * BLUE / 255)))
    np.testing.assert_allclose(result.detections.scores, [score], rtol=1e-4)
    assert result.detections.class_ids.tolist() == [3] and result.names() == ["3"]  # no labels: indices
    cx, cy, w, h = 168, 88, 64, 96
    np.testing.assert_allclose(
        result.detections.boxes, [[(cx - w / 2) * 2, (cy - h / 2) * 2, (cx + w / 2) * 2, (cy + h / 2) * 2]], atol=0.01
    )


# --------------------------------------------------------------------------- 001: TF2 OD API + EfficientNMS


def efficient_nms_outputs() -> dict[str, np.ndarray]:
    """The four outputs of TensorRT's EfficientNMS plugin: num_detections int32 [B,1], detection_boxes
    float32 [B,100,4] (TF OD API boxes: ymin, xmin, ymax, xmax normalized), detection_scores float32
    [B,100], detection_classes int32 [B,100] (0-based, background removed)."""
    boxes = np.zeros((1, 100, 4), np.float32)
    boxes[0, 0] = [0.1, 0.2, 0.5, 0.6]
    classes = np.zeros((1, 100), np.int32)
    classes[0, 0] = 17  # COCO id 18: dog
    return {
        "num_detections": np.array([[1]], np.int32),
        "detection_boxes": boxes,
        "detection_scores": np.zeros((1, 100), np.float32),
        "detection_classes": classes,
    }


@pytest.mark.parametrize(("spec_name", "size"), [("ssd_mobilenet_v2_coco", 300), ("faster_rcnn_resnet50_coco", 640)])
def test_seed_001_tf2_od_api_efficient_nms_exports(tmp_path, spec_name, size):
    """001: the graph takes float32 [1,H,W,3] "RGB pixel data in the range of 0 to 255" (`input_tensor` in
    TensorRT's create_onnx.py) at the true resolution of its table (SSD MobileNet v2 320x320: 300x300; Faster
    R-CNN ResNet50 640x640: 640x640) and outputs EfficientNMS's tensors. SSD uses fixed_shape_resizer
    (stretch), Faster R-CNN keep_aspect_ratio_resizer (the sample pads bottom/right)."""
    # score = mean(red channel, 0..255) / 255: 0.784 with RGB 0..255 input; BGR or scaled input loses it.
    model = planted_graph(
        "input_tensor", [1, size, size, 3], 3, efficient_nms_outputs(), "detection_scores", (0, 0), 1 / 255, 0.0
    )
    result = run_bundled(spec_name, model, tmp_path, 480, 640)
    np.testing.assert_allclose(result.detections.scores, [RED / 255], rtol=1e-5)
    assert result.names() == ["dog"]
    if spec_name == "ssd_mobilenet_v2_coco":  # stretched: normalized coordinates scale to the source size
        expected = [0.2 * 640, 0.1 * 480, 0.6 * 640, 0.5 * 480]
    else:  # 640x480 scaled by 1 into the top-left of 640x640: fractions of 640 source pixels
        expected = [0.2 * 640, 0.1 * 640, 0.6 * 640, 0.5 * 640]
    np.testing.assert_allclose(result.detections.boxes, [expected], atol=0.01)


def test_seed_001_efficient_nms_plugin_graph_says_it_needs_tensorrt(tmp_path):
    """The real exports contain the EfficientNMS_TRT plugin node, which ONNX Runtime cannot run."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "EfficientNMS_TRT",
                ["boxes", "scores"],
                ["num_detections", "detection_boxes", "detection_scores", "detection_classes"],
                plugin_version="1",
                max_output_boxes=100,
            )
        ],
        "tfod",
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 10, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 10, 90]),
        ],
        [
            helper.make_tensor_value_info("num_detections", TensorProto.INT32, [1, 1]),
            helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, [1, 100, 4]),
            helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, [1, 100]),
            helper.make_tensor_value_info("detection_classes", TensorProto.INT32, [1, 100]),
        ],
    )
    path = tmp_path / "with_plugin.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    with pytest.raises(ModelLoadError, match=r"uses the TensorRT plugin op\(s\) EfficientNMS_TRT.*backend tensorrt"):
        OnnxRuntimeBackend(path)


# --------------------------------------------------------------------------- 004: UFF SSD-MobileNetV2 as ONNX


def test_seed_004_uff_ssd_mobilenet_v2_as_onnx(tmp_path):
    """004: TF1 ssd_mobilenet_v2_coco, 91 classes (90 + background), ssd_anchor_generator min 0.2 / max 0.95,
    the UFF `Input` (NCHW [1,3,300,300], pixel * 2/255 - 1) and the NMS plugin's loc / conf data: box
    encodings [1,1917,1,4] (ty, tx, th, tw; variances 0.1, 0.1, 0.2, 0.2) and class logits [1,1917,91]
    (sigmoid, column 0 background). Anchor 1413 is box 0 of cell (5, 5) of layer 1 (19*19*3 anchors before
    it, 6 per cell): centre (5.5/10, 5.5/10), scale 0.2 + 0.75/5 = 0.35, aspect 1."""
    boxes = np.zeros((1, 1917, 1, 4), np.float32)
    boxes[0, 1413, 0] = [1.0, -1.0, 0.0, 0.0]  # cy += 0.1 x 0.35, cx -= 0.1 x 0.35
    logits = np.full((1, 1917, 91), -10.0, np.float32)
    # class column 18 (COCO id 18: dog); logit = 4 x mean(channel 0 normalized): red 200 -> 2 x 200/255 - 1
    model = planted_graph(
        "Preprocessor/sub:0",
        [1, 3, 300, 300],
        1,
        {"concat:0": boxes, "concat_1:0": logits},
        "concat_1:0",
        (0, 1413, 18),
        4.0,
        0.0,
    )
    result = run_bundled("ssd_mobilenet_v2_coco_raw", model, tmp_path, 300, 600)
    red = 2 * RED / 255 - 1
    np.testing.assert_allclose(result.detections.scores, [1 / (1 + math.exp(-4 * red))], rtol=1e-4)
    assert result.names() == ["dog"]
    cy, cx, side = 0.55 + 0.035, 0.55 - 0.035, 0.35
    np.testing.assert_allclose(
        result.detections.boxes,
        [[(cx - side / 2) * 600, (cy - side / 2) * 300, (cx + side / 2) * 600, (cy + side / 2) * 300]],
        atol=0.01,
    )
