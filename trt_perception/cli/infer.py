"""Run a model on image files or folders; write label PNGs, overlays or annotated images and a results file.

Per image: segmentation writes ``<name>_labels.png`` (class index per pixel) and
``<name>_overlay.png``; detection writes ``<name>_detections.png``. All images share one results
file (``results.json`` or ``results.tsv``) with per-class pixel counts or class, score and box in
source pixels. A summary with per-stage timings (mean, p50, p90) is printed at the end.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from trt_perception.errors import ImageDecodeError, InferenceError
from trt_perception.evaluation.metrics import LatencyStats
from trt_perception.cli.arguments import add_max_pixels_argument, non_negative_int, unit_interval
from trt_perception.image_files import collect_images, read_image
from trt_perception.pipeline import STAGES
from trt_perception.pipeline_factory import DEVICES, create_pipeline
from trt_perception.results import DetectionResult, SegmentationResult, class_name
from trt_perception.visualize import as_rgb, colorize, draw_detections, make_palette, overlay

DEFAULT_OVERLAY_ALPHA = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``infer``."""
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="image files (.png, .jpg) or folders of them (searched recursively)")
    parser.add_argument("--model-spec", required=True, help="model spec file or bundled spec name")
    parser.add_argument("--output", "-o", type=Path, required=True, help="folder for the results")
    parser.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"),
                        help="override the spec's backend")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where pre/post-processing runs: cpu (default), gpu (CuPy) or auto (gpu when usable)")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="ONNX Runtime intra-op threads (0: default)")
    parser.add_argument("--score-threshold", type=unit_interval, help="detection: override the spec's score threshold")
    parser.add_argument("--alpha", type=unit_interval,
                        help=f"segmentation overlay opacity (default {DEFAULT_OVERLAY_ALPHA})")
    add_max_pixels_argument(parser)
    parser.add_argument("--format", choices=("json", "tsv"), default="json", help="results file format")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, number = path.stem, 2
    while stem in used:
        stem, number = f"{path.stem}_{number}", number + 1
    used.add(stem)
    return stem


def _save_rgb(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def _write_segmentation(result: SegmentationResult, image: np.ndarray, stem: str, args: argparse.Namespace,
                        palette: np.ndarray) -> dict[str, Any]:
    labels_file, overlay_file = f"{stem}_labels.png", f"{stem}_overlay.png"
    if not cv2.imwrite(str(args.output / labels_file), result.labels):
        raise OSError(f"cannot write {args.output / labels_file}")
    alpha = DEFAULT_OVERLAY_ALPHA if args.alpha is None else args.alpha
    _save_rgb(args.output / overlay_file, overlay(image, colorize(result.labels, palette), alpha))
    ids, counts = np.unique(result.labels, return_counts=True)
    return {
        "labels": labels_file,
        "overlay": overlay_file,
        "class_pixels": {class_name(result.class_names, int(i)): int(c) for i, c in zip(ids, counts)},
    }


def _write_detection(result: DetectionResult, image: np.ndarray, stem: str, args: argparse.Namespace,
                     palette: np.ndarray) -> dict[str, Any]:
    annotated_file = f"{stem}_detections.png"
    _save_rgb(args.output / annotated_file, draw_detections(image, result.detections, result.class_names, palette))
    detections = [
        {"class": name, "class_id": int(class_id), "score": round(float(score), 4),
         "box": [round(float(v), 2) for v in box]}
        for name, class_id, score, box in zip(
            result.names(), result.detections.class_ids, result.detections.scores, result.detections.boxes
        )
    ]
    return {"annotated": annotated_file, "detections": detections}


def _write_results(path: Path, task: str, records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps({**summary, "images": records}, indent=2) + "\n", encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, delimiter="\t", lineterminator="\n")
        if task == "detection":
            writer.writerow(["image", "class", "class_id", "score", "x1", "y1", "x2", "y2"])
            for record in records:
                for det in record["detections"]:
                    writer.writerow([record["image"], det["class"], det["class_id"], det["score"], *det["box"]])
        else:
            writer.writerow(["image", "class", "pixels"])
            for record in records:
                for name, count in record["class_pixels"].items():
                    writer.writerow([record["image"], name, count])


def _outside(images: list[Path], folder: Path) -> tuple[list[Path], int]:
    """The images not inside ``folder`` (infer never reads its own outputs) and how many were left out."""
    root = folder.resolve()
    kept = [path for path in images if not path.resolve().is_relative_to(root)]
    return kept, len(images) - len(kept)


def run(args: argparse.Namespace) -> int:
    """Run ``infer``; 0 when every image was processed, 1 when some failed."""
    if args.output.exists() and not args.output.is_dir():
        print(f"trt-perception infer: --output {args.output} exists and is not a folder", file=sys.stderr)
        return 2
    try:
        images = collect_images(args.inputs)
    except FileNotFoundError as error:
        print(f"trt-perception infer: {error}", file=sys.stderr)
        return 2
    images, own_outputs = _outside(images, args.output)
    if own_outputs:
        print(f"trt-perception infer: left out {own_outputs} images inside the output folder {args.output}",
              file=sys.stderr)
    if not images:
        print("trt-perception infer: no .png/.jpg images in the inputs", file=sys.stderr)
        return 1
    pipeline = create_pipeline(args.model_spec, backend_kind=args.backend, intra_op_threads=args.threads,
                               device=args.device)
    spec = pipeline.spec
    if args.score_threshold is not None:
        if spec.task != "detection":
            print("trt-perception infer: --score-threshold applies to detection models only", file=sys.stderr)
            return 2
        pipeline.detection_filter = dataclasses.replace(pipeline.detection_filter, score_threshold=args.score_threshold)
    if args.alpha is not None and spec.task != "segmentation":
        print("trt-perception infer: --alpha applies to segmentation models only", file=sys.stderr)
        return 2
    palette = make_palette(spec.palette, len(pipeline.class_names))
    args.output.mkdir(parents=True, exist_ok=True)
    latency, failures = LatencyStats(), 0
    records: list[dict[str, Any]] = []
    used_stems: set[str] = set()
    show_progress = not args.no_progress and any(path.is_dir() for path in args.inputs)
    for path in tqdm(images, unit="image", disable=not show_progress):
        try:
            pixels, channel_order = read_image(path, args.max_pixels)
            result = pipeline.run(pixels, channel_order)
        except (ImageDecodeError, InferenceError) as error:
            tqdm.write(f"trt-perception infer: skipped {path}: {error}", file=sys.stderr)
            failures += 1
            continue
        latency.add(result.timings.milliseconds)
        image = as_rgb(pixels, channel_order)
        stem = _unique_stem(path, used_stems)
        record = {"image": str(path), "height": image.shape[0], "width": image.shape[1]}
        if isinstance(result, SegmentationResult):
            record.update(_write_segmentation(result, image, stem, args, palette))
        else:
            record.update(_write_detection(result, image, stem, args, palette))
        records.append(record)
    stats = latency.summary()
    timings = {stage: {key: round(stats[stage][key], 3) for key in ("mean", "p50", "p90")} for stage in STAGES if stage in stats}
    summary = {"model": spec.name, "task": spec.task, "backend": pipeline.backend.name, "device": pipeline.device,
               "processed": len(records), "failed": failures, "timings_ms": timings}
    results_path = args.output / f"results.{args.format}"
    _write_results(results_path, spec.task, records, summary)
    print(f"{spec.name} ({spec.task}, {pipeline.backend.name}, {pipeline.device}): {len(records)} images processed, "
          f"{failures} failed; results in {results_path}")
    for stage, values in timings.items():
        print(f"  {stage:<12} mean {values['mean']:8.2f} ms   p50 {values['p50']:8.2f} ms   p90 {values['p90']:8.2f} ms")
    pipeline.close()
    return 1 if failures else 0
