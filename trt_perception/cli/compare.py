"""Run the same images through ONNX Runtime and TensorRT and report how far the results agree.

Segmentation: percentage of pixels with the same label. Detection: boxes matched one to one
(same class, IoU >= --iou, best pairs first), mean IoU and score differences of the matches, and
the boxes only one backend found. Both: the largest absolute difference of each raw output tensor
for the same input tensor.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trt_perception.backends import Backend, create_backend
from trt_perception.cli.arguments import unit_interval
from trt_perception.evaluation.metrics import box_iou
from trt_perception.image_files import collect_images, read_image
from trt_perception.pipeline import Pipeline
from trt_perception.results import DetectionResult, Detections, SegmentationResult
from trt_perception.spec import load_model_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compare``."""
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files (.png, .jpg) or folders")
    parser.add_argument("--model-spec", required=True, help="model spec file or bundled spec name")
    parser.add_argument(
        "--engine", type=Path, help="TensorRT engine (default: the spec's engine, else one built by the engine cache)"
    )
    parser.add_argument("--iou", type=unit_interval, default=0.5, help="IoU at which two boxes of one class match (0.5)")
    parser.add_argument("--json", type=Path, help="also write the per-image report to this JSON file")
    parser.add_argument(
        "--min-agreement",
        type=float,
        help="exit with 1 when an image's label agreement or matched-box share (%%) is below this",
    )


@dataclass
class DetectionAgreement:
    """How two detection sets of one image agree."""

    matched: int
    only_reference: int
    only_candidate: int
    mean_iou: float
    mean_score_delta: float
    max_score_delta: float

    @property
    def matched_percent(self) -> float:
        """Matched boxes as a share of all distinct boxes (100 when both found none)."""
        total = self.matched + self.only_reference + self.only_candidate
        return 100.0 * self.matched / total if total else 100.0


def match_detections(reference: Detections, candidate: Detections, iou_threshold: float) -> DetectionAgreement:
    """One-to-one matches of same-class boxes with IoU >= ``iou_threshold``, best IoU first."""
    iou = box_iou(reference.boxes, candidate.boxes)
    iou[reference.class_ids[:, None] != candidate.class_ids[None, :]] = 0.0
    pairs: list[tuple[int, int]] = []
    used_reference: set[int] = set()
    used_candidate: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        row, column = divmod(int(flat), iou.shape[1])
        if iou[row, column] < iou_threshold or iou[row, column] <= 0.0:
            break
        if row not in used_reference and column not in used_candidate:
            pairs.append((row, column))
            used_reference.add(row)
            used_candidate.add(column)
    ious = np.array([iou[row, column] for row, column in pairs])
    deltas = np.array([abs(float(reference.scores[row]) - float(candidate.scores[column])) for row, column in pairs])
    return DetectionAgreement(
        matched=len(pairs),
        only_reference=len(reference) - len(pairs),
        only_candidate=len(candidate) - len(pairs),
        mean_iou=float(ious.mean()) if len(pairs) else float("nan"),
        mean_score_delta=float(deltas.mean()) if len(pairs) else float("nan"),
        max_score_delta=float(deltas.max()) if len(pairs) else float("nan"),
    )


def label_agreement(reference: npt.NDArray, candidate: npt.NDArray) -> float:
    """Percentage of pixels with the same label."""
    if reference.shape != candidate.shape:
        raise ValueError(f"label maps differ in shape: {reference.shape} vs {candidate.shape}")
    return 100.0 * float(np.mean(reference == candidate))


def output_deltas(
    reference: Pipeline, candidate: Pipeline, pixels: npt.NDArray, channel_order: str
) -> dict[str, float]:
    """Largest absolute difference of every raw output for the same preprocessed input."""
    tensor, _ = reference.preprocessor(pixels, channel_order)
    expected = reference.backend.infer({reference.input_name: tensor})
    actual = candidate.backend.infer({candidate.input_name: tensor})
    return {
        name: float(np.max(np.abs(expected[name].astype(np.float64) - actual[name].astype(np.float64)), initial=0.0))
        for name in expected
    }


def compare_image(reference: Pipeline, candidate: Pipeline, path: Path, iou_threshold: float) -> dict[str, Any]:
    """The agreement of both pipelines on one image, as a JSON-ready record."""
    pixels, channel_order = read_image(path)
    expected = reference.run(pixels, channel_order)
    actual = candidate.run(pixels, channel_order)
    record: dict[str, Any] = {
        "image": str(path),
        "max_output_delta": output_deltas(reference, candidate, pixels, channel_order),
    }
    if isinstance(expected, SegmentationResult) and isinstance(actual, SegmentationResult):
        record["label_agreement_percent"] = label_agreement(expected.labels, actual.labels)
    elif isinstance(expected, DetectionResult) and isinstance(actual, DetectionResult):
        agreement = match_detections(expected.detections, actual.detections, iou_threshold)
        record["detections"] = {**asdict(agreement), "matched_percent": agreement.matched_percent}
    return record


def agreement_percent(record: dict[str, Any]) -> float:
    """The record's headline number: label agreement or matched-box share."""
    if "label_agreement_percent" in record:
        return float(record["label_agreement_percent"])
    return float(record["detections"]["matched_percent"])


def json_ready(value: Any) -> Any:
    """``value`` with every NaN or infinite float (e.g. the mean IoU of no matched boxes) made None:
    JSON has no NaN, and strict readers refuse the ``NaN`` Python would write."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_ready(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _line(record: dict[str, Any]) -> str:
    deltas = ", ".join(f"{name} {delta:.3g}" for name, delta in record["max_output_delta"].items())
    if "label_agreement_percent" in record:
        headline = f"labels agree {record['label_agreement_percent']:.3f} %"
    else:
        det = record["detections"]
        headline = (
            f"boxes matched {det['matched']} (only onnxruntime {det['only_reference']}, only tensorrt "
            f"{det['only_candidate']}), mean IoU {det['mean_iou']:.4f}, |score delta| mean "
            f"{det['mean_score_delta']:.4f} max {det['max_score_delta']:.4f}"
        )
    return f"{record['image']}: {headline}; max |output delta|: {deltas}"


def tensorrt_backend(spec_name: str, engine: Path | None) -> Backend:
    """The TensorRT side: ``engine`` when given, else the spec's engine or the engine cache's."""
    from trt_perception.tensorrt.backend import TensorRTBackend

    if engine is not None:
        return TensorRTBackend(engine)
    return create_backend(load_model_spec(spec_name), "tensorrt")


def run(args: argparse.Namespace) -> int:
    """Run ``compare``; 1 when some image falls below ``--min-agreement``."""
    images = collect_images(args.inputs)
    if not images:
        print("trt-perception compare: no .png/.jpg images in the inputs", file=sys.stderr)
        return 1
    spec = load_model_spec(args.model_spec)
    reference = Pipeline(spec, create_backend(spec, "onnxruntime"))
    candidate = Pipeline(spec, tensorrt_backend(args.model_spec, args.engine))
    try:
        records = [compare_image(reference, candidate, path, args.iou) for path in images]
    finally:
        reference.close()
        candidate.close()
    for record in records:
        print(_line(record))
    worst = min(agreement_percent(record) for record in records)
    print(f"{spec.name}: {len(records)} images, lowest agreement {worst:.3f} %")
    if args.json is not None:
        report = json_ready({"model": spec.name, "images": records})
        args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return 1 if args.min_agreement is not None and worst < args.min_agreement else 0
