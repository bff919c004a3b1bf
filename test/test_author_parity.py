"""The bundled real models give what their authors' own pipelines give, on every sample image.

References are RECORDED, not computed here: scripts/record_references.py ran the authors' packages
(``mediapipe==0.10.14``, ``rapidocr_onnxruntime==1.4.4``, in a venv of their own, never importing
trt_perception) on test/fixtures/images and wrote test/fixtures/references/ (versions.json says
what ran). Rerun that script to check or refresh them; CI needs neither package.

- Selfie segmentation vs MediaPipe's legacy ``mp.solutions.selfie_segmentation`` (general model):
  mask IoU on every image where either mask has at least 1 % person; and MediaPipe's bilinear
  upsample of its own 256x256 probabilities, bit for bit.
- PP-OCRv4 vs RapidOCR's text detector: the text mask at RapidOCR's resize rule (same network size,
  IoU), and the text boxes matched one to one (axis-aligned envelopes of RapidOCR's 4-corner boxes).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from trt_perception.geometry import resize_map
from trt_perception.pipeline import Pipeline
from trt_perception.results import DetectionResult, SegmentationResult
from trt_perception.spec import load_model_spec

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = FIXTURES / "images"
REFERENCES = FIXTURES / "references"
SAMPLES = sorted(path.name for path in IMAGES.iterdir() if path.suffix in (".png", ".jpg"))

def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def enlarged_page(factor: int = 4) -> np.ndarray:
    """page.png enlarged by pixel repetition (as the recording script does): short side 764 > 736."""
    page = cv2.imread(str(IMAGES / "page.png"), cv2.IMREAD_COLOR)
    return np.repeat(np.repeat(page, factor, axis=0), factor, axis=1)


def test_every_sample_image_has_references() -> None:
    for name in SAMPLES:
        stem = Path(name).stem
        assert (REFERENCES / "selfie_mediapipe" / f"{stem}.png").is_file(), name
        assert (REFERENCES / "ppocr_rapidocr" / f"{stem}.png").is_file(), name


@pytest.fixture(scope="module")
def selfie() -> Pipeline:
    return Pipeline.from_spec("selfie_segmentation", intra_op_threads=1)


@pytest.mark.parametrize("name", SAMPLES)
def test_selfie_mask_matches_mediapipe(selfie: Pipeline, name: str) -> None:
    bgr = cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR)
    reference = cv2.imread(str(REFERENCES / "selfie_mediapipe" / f"{Path(name).stem}.png"), cv2.IMREAD_GRAYSCALE) > 0
    result = selfie.run(bgr, "BGR")
    assert isinstance(result, SegmentationResult)
    ours = result.labels == 1
    assert ours.shape == reference.shape
    if max(ours.mean(), reference.mean()) < 0.01:
        assert np.count_nonzero(ours ^ reference) <= 0.002 * ours.size
        return
    assert iou(ours, reference) >= 0.98


def test_selfie_upsampling_is_mediapipes_to_the_bit(selfie: Pipeline) -> None:
    """MediaPipe's probabilities upsampled to 768x768 by the package's float resize (the selfie
    decoder's horizontal pass, and its whole upsample without numba) equal MediaPipe's own upsample
    in every bit (OpenCV's own float resize, not Intel IPP's: about half of the values would
    differ), and the selfie decoder's labels are MediaPipe's upsample cut at 0.5."""
    recorded = np.load(REFERENCES / "selfie_mediapipe" / "upsampling_person_768.npz")
    scores, rows, expected = recorded["scores"], recorded["rows"], recorded["upsampled_rows"]
    assert scores.shape == (256, 256) and expected.shape == (len(rows), 768)
    geometry = selfie.preprocessor.geometry((768, 768))
    upsampled = resize_map(scores, (768, 768), cv2.INTER_LINEAR)[rows]
    assert np.count_nonzero((expected > 0) & (expected < 1)) > 0.4 * expected.size  # not a saturated map
    assert np.array_equal(upsampled, expected), f"{np.count_nonzero(upsampled != expected)} values differ"
    labels = selfie.decoder.decode({"activation_10": scores[None, :, :, None]}, geometry, True)
    assert np.array_equal(labels[rows], (expected > 0.5).astype(labels.dtype))


def ppocr_inputs() -> list[tuple[str, np.ndarray]]:
    images = [(name, cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR)) for name in SAMPLES]
    return images + [("page_x4.png", enlarged_page())]


@pytest.fixture(scope="module")
def ppocr_mask() -> Pipeline:
    spec = dataclasses.replace(load_model_spec("ppocrv4_det"), output_resolution="network")
    return Pipeline.from_spec(spec, intra_op_threads=1)


@pytest.fixture(scope="module")
def ppocr_boxes() -> Pipeline:
    return Pipeline.from_spec("ppocrv4_det_text_boxes", intra_op_threads=1)


@pytest.fixture(scope="module")
def ppocr_results(ppocr_mask: Pipeline, ppocr_boxes: Pipeline) -> dict[str, tuple[SegmentationResult, DetectionResult]]:
    """Both PP-OCR pipelines on every input, run once for the module."""
    results = {}
    for name, bgr in ppocr_inputs():
        mask, boxes = ppocr_mask.run(bgr, "BGR"), ppocr_boxes.run(bgr, "BGR")
        assert isinstance(mask, SegmentationResult) and isinstance(boxes, DetectionResult)
        results[name] = (mask, boxes)
    return results


@pytest.mark.parametrize("name", [*SAMPLES, "page_x4.png"])
def test_ppocr_text_mask_matches_rapidocr_at_its_resize_rule(ppocr_results, name: str) -> None:
    reference = cv2.imread(str(REFERENCES / "ppocr_rapidocr" / f"{Path(name).stem}.png"), cv2.IMREAD_GRAYSCALE) > 0
    labels = ppocr_results[name][0].labels
    assert labels.shape == reference.shape  # the same network size: RapidOCR's rounding and upscale-only rule
    assert iou(labels == 1, reference) >= 0.98


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``xyxy`` boxes."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = np.prod(np.clip(high - low, 0, None), axis=2)
    area = lambda boxes: np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)  # noqa: E731
    return overlap / (area(a)[:, None] + area(b)[None, :] - overlap)


@pytest.mark.parametrize("name", [*SAMPLES, "page_x4.png"])
def test_ppocr_text_boxes_match_rapidocr_one_to_one(ppocr_results, name: str) -> None:
    """Same number of boxes, each matched to a different reference box, corners within 2 source
    pixels (RapidOCR offsets on whole pixels with pyclipper and rounds the boxes to whole pixels)."""
    corners = json.loads((REFERENCES / "ppocr_rapidocr" / "boxes.json").read_text())[name]
    reference = np.array([[*np.min(quad, axis=0), *np.max(quad, axis=0)] for quad in corners]).reshape(-1, 4)
    ours = np.asarray(ppocr_results[name][1].detections.boxes, np.float64)
    assert len(ours) == len(reference)
    if len(ours):
        best = box_iou(ours, reference).argmax(axis=1)
        assert sorted(best) == list(range(len(reference)))  # one to one
        assert np.abs(ours - reference[best]).max() <= 2.0
