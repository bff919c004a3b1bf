"""pycocotools' own COCO box evaluation, run the way its documentation shows (a ground-truth json
file, ``loadRes`` on the detections, ``evaluate / accumulate / summarize``): the independent
reference for bag-eval's detection metrics. Shares no code with trt_perception."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# metrics.json keys -> index into COCOeval.stats (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ...)
STAT_INDEX = {"map": 0, "ap50": 1, "ap75": 2, "ap_small": 3, "ap_medium": 4, "ap_large": 5, "ar100": 8}


def pycocotools_stats(ground_truth: dict, detections: list[dict], folder: Path) -> dict[str, float | None]:
    """COCOeval's summary numbers (None where pycocotools prints -1) for these detections."""
    path = folder / "reference_ground_truth.json"
    path.write_text(json.dumps(ground_truth))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        evaluation = COCOeval(coco, coco.loadRes([dict(d) for d in detections]), "bbox")  # loadRes edits them
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {key: None if evaluation.stats[i] == -1 else float(evaluation.stats[i]) for key, i in STAT_INDEX.items()}


def best_per_image(detections: list[dict], limit: int = 100) -> list[dict]:
    """The COCO challenge's rule: at most ``limit`` detections per image, the highest scores."""
    kept: list[dict] = []
    for image_id in sorted({d["image_id"] for d in detections}):
        mine = [d for d in detections if d["image_id"] == image_id]
        order = np.argsort([-d["score"] for d in mine], kind="stable")[:limit]
        kept += [mine[i] for i in order]
    return kept


def xywh(box: np.ndarray | list[float]) -> list[float]:
    """``xyxy`` -> COCO's ``[x, y, width, height]``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]
