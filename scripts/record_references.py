#!/usr/bin/env python3
"""Record the model authors' own results on the sample images into test/fixtures/references/.

The parity tests (test/test_author_parity.py) compare the package against these files. They come
from the authors' packages, never from trt_perception (this script does not import it):

- selfie_mediapipe/<image>.png: MediaPipe's legacy selfie segmentation
  (``mediapipe==0.10.14``, ``mp.solutions.selfie_segmentation``, model_selection=0: the general
  256x256 model, the same selfie_segmentation.tflite the bundled ONNX was converted from), its
  ``segmentation_mask`` > 0.5 at source size, stored as 0/255.
- selfie_mediapipe/upsampling_person_768.npz: MediaPipe's own bilinear upsample, bit for bit. For
  person.jpg resized to 768x768 (three times the model's 256x256), ``scores`` is MediaPipe's
  256x256 person probability map, read off its ``segmentation_mask`` at pixels (1 + 3i, 1 + 3j),
  where the upsample samples one probability with weight 1; ``rows`` and ``upsampled_rows`` are
  every fifth row of the 768x768 ``segmentation_mask`` (all three sampling phases).
- ppocr_rapidocr/<image>.png and boxes.json: RapidOCR's text detector (``rapidocr_onnxruntime==1.4.4``,
  its default config.yaml, the same ch_PP-OCRv4_det_infer.onnx as the bundled model): the
  text mask (probability > its thresh 0.3) at the size RapidOCR resizes to, and its text boxes
  (4 corners, source pixels) per image.

The authors' packages do not belong in the repository's environment; run this in a venv of its own:

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install mediapipe==0.10.14 rapidocr_onnxruntime==1.4.4
    /tmp/refvenv/bin/python scripts/record_references.py

It rewrites every file it records (deterministic on one machine; the tests allow for the small
differences between machines) and writes versions.json with the versions it ran.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "test" / "fixtures" / "images"
REFERENCES = REPO / "test" / "fixtures" / "references"
VERSIONS = {"mediapipe": "0.10.14", "rapidocr_onnxruntime": "1.4.4"}


def sample_images() -> list[Path]:
    """Every .png / .jpg sample image, sorted by name."""
    return sorted(path for path in IMAGES.iterdir() if path.suffix in (".png", ".jpg"))


def enlarged_page(factor: int = 4) -> np.ndarray:
    """page.png (BGR) enlarged by pixel repetition: a frame whose short side (764) exceeds 736, which
    RapidOCR keeps at its size. The parity test builds the same array the same way."""
    page = cv2.imread(str(IMAGES / "page.png"), cv2.IMREAD_COLOR)
    return np.repeat(np.repeat(page, factor, axis=0), factor, axis=1)


def record_selfie(images: list[Path]) -> None:
    """MediaPipe selfie segmentation masks, one fresh graph per image (no state between images)."""
    import mediapipe as mp

    folder = REFERENCES / "selfie_mediapipe"
    folder.mkdir(parents=True, exist_ok=True)
    for path in images:
        rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
            probability = segmenter.process(rgb).segmentation_mask
        mask = (probability > 0.5).astype(np.uint8) * 255
        cv2.imwrite(str(folder / f"{path.stem}.png"), mask)
        print(f"selfie {path.name}: {100 * np.count_nonzero(mask) / mask.size:.1f} % person")


def record_selfie_upsampling() -> None:
    """MediaPipe's float upsample of its probabilities (see the module docstring)."""
    import mediapipe as mp

    bgr = cv2.resize(cv2.imread(str(IMAGES / "person.jpg"), cv2.IMREAD_COLOR), (768, 768), interpolation=cv2.INTER_AREA)
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
        probability = segmenter.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).segmentation_mask
    rows = np.arange(0, 768, 5)
    np.savez_compressed(REFERENCES / "selfie_mediapipe" / "upsampling_person_768.npz",
                        scores=np.ascontiguousarray(probability[1::3, 1::3]), rows=rows,
                        upsampled_rows=probability[rows])
    between = np.count_nonzero((probability > 0) & (probability < 1))
    print(f"selfie upsampling: {between} of {probability.size} probabilities strictly between 0 and 1")


def record_ppocr(images: list[Path]) -> None:
    """RapidOCR's text detector: text mask at its network size, and its text boxes."""
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    detector = engine.text_det
    folder = REFERENCES / "ppocr_rapidocr"
    folder.mkdir(parents=True, exist_ok=True)
    boxes = {}
    inputs = [(path.name, engine.load_img(str(path))) for path in images] + [("page_x4.png", enlarged_page())]
    for name, bgr in inputs:
        bgr, _, _ = engine.preprocess(bgr)  # RapidOCR's own bounds (no change below 2000 pixels)
        resize = detector.get_preprocess(max(bgr.shape[:2]))
        probability = detector.infer(resize(bgr))[0][0, 0]
        mask = (probability > detector.postprocess_op.thresh).astype(np.uint8) * 255
        cv2.imwrite(str(folder / f"{Path(name).stem}.png"), mask)
        found, _ = detector(bgr)
        boxes[name] = [] if found is None else np.asarray(found).round(2).tolist()
        print(f"ppocr {name}: mask {mask.shape}, {len(boxes[name])} boxes")
    (folder / "boxes.json").write_text(json.dumps(boxes, indent=1) + "\n")


def main() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = {name: version(name) for name in VERSIONS}
    except PackageNotFoundError as error:
        raise SystemExit(f"{error.name} is not installed; see this script's docstring") from error
    if installed != VERSIONS:
        raise SystemExit(f"need {VERSIONS}, found {installed}; see this script's docstring")
    images = sample_images()
    record_selfie(images)
    record_selfie_upsampling()
    record_ppocr(images)
    (REFERENCES / "versions.json").write_text(
        json.dumps(
            {**installed, "opencv": cv2.__version__, "numpy": np.__version__, "python": platform.python_version()},
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
