"""The evaluation's outputs: ``metrics.json``, ``report.md`` and plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.evaluation.evaluator import EvaluationResult, WorstFrame
from trt_perception.evaluation.ground_truth import BoxTruth, MaskTruth
from trt_perception.evaluation.metrics import DetectionScores
from trt_perception.results import Detections
from trt_perception.visualize import as_rgb, colorize, draw_detections, make_palette, overlay

THUMBNAIL_SIDE = 640
COCO_KEYS = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100")
LATENCY_NOTES = {
    "offline": "Per frame, in this process, after one untimed warm-up run (decode = image message to pixels).",
    "live": "Per frame, from publishing the image to receiving the node's answer over DDS.",
}


def thumbnail(pixels: npt.NDArray, channel_order: str, max_side: int = THUMBNAIL_SIDE) -> npt.NDArray[np.uint8]:
    """A small RGB uint8 copy of a decoded image, for drawing the report's worst frames."""
    rgb = as_rgb(pixels, channel_order)
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), np.uint8)


def _number(value: float | None) -> float | None:
    """JSON has no NaN: undefined values become null."""
    return None if value is None or math.isnan(value) else float(value)


def metrics_dict(result: EvaluationResult, context: Mapping[str, Any]) -> dict[str, Any]:
    """Everything of ``metrics.json``: context (bag, model, ...), frame counts, metrics, latency."""
    latency = result.latency.summary()
    total = latency.get("total", {})
    data: dict[str, Any] = dict(context)
    data.update(
        model=result.model,
        task=result.task,
        **({"device": result.device} if result.device is not None else {}),
        ground_truth=result.ground_truth,
        frames={
            "on_topic": result.frames_on_topic,
            "processed": result.frames_processed,
            "evaluated": result.frames_evaluated,
            "skipped": result.skipped,
            "without_ground_truth": result.frames_without_truth,
            "ground_truth_without_frame": result.truths_without_frame,
            "ground_truth_unusable": result.truth_unusable,
            "outputs_without_frame": result.outputs_without_frame,
        },
        read_error=result.read_error,
        latency_ms=latency,
        fps={
            "wall_clock": _number(result.fps),
            "pipeline": _number(1000.0 / total["mean"]) if total.get("mean") else None,
        },
    )
    if result.segmentation is not None:
        scores = result.segmentation
        data["segmentation"] = {
            "mean_iou": _number(scores.mean_iou),
            "pixel_accuracy": _number(scores.pixel_accuracy),
            "class_iou": {
                name: _number(iou) for name, iou in zip(_names(result, len(scores.class_iou)), scores.class_iou, strict=True)
            },
            "ignore_index": result.ignore_index,
            "evaluated_pixels": scores.evaluated_pixels,
        }
    if result.detection is not None:
        data["detection"] = _detection_dict(result.detection)
        if result.deployment is not None:
            data["detection"]["deployment"] = {
                "score_threshold": result.deployment_threshold, **_detection_dict(result.deployment, with_classes=False)
            }
    return data


def _detection_dict(scores: DetectionScores, with_classes: bool = True) -> dict[str, Any]:
    """The COCO numbers of ``scores`` (names as pycocotools prints them, lower case)."""
    data: dict[str, Any] = {
        "map": _number(scores.mean_ap),
        "ap50": _number(scores.ap50),
        "ap75": _number(scores.ap75),
        "ap_small": _number(scores.ap_small),
        "ap_medium": _number(scores.ap_medium),
        "ap_large": _number(scores.ap_large),
        "ar100": _number(scores.ar100),
    }
    if with_classes:
        data["class_ap"] = {name: _number(ap) for name, ap in scores.class_ap.items()}
    data.update(ground_truth_boxes=scores.ground_truth_boxes, detections=scores.detections)
    return data


def _names(result: EvaluationResult, count: int) -> list[str]:
    names = list(result.class_names)
    return names + [str(i) for i in range(len(names), count)]


def _format(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_report(
    result: EvaluationResult, out: Path, context: Mapping[str, Any], bags: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Write ``metrics.json``, plots and ``report.md`` into ``out``; returns the metrics dict.

    ``bags``: one row per bag of a fleet job (``bag``, ``status``, ``reason``, ``note``, frame counts,
    its own ``mean_iou`` or ``map``, ``fps``, ``output``); ``result`` is then the merged total.
    """
    out.mkdir(parents=True, exist_ok=True)
    data = metrics_dict(result, context)
    if bags is not None:
        data["bags"] = [{k: _number(v) if isinstance(v, float) else v for k, v in row.items()} for row in bags]
    plots = _plots(result, data, out)
    worst = _worst_frames(result, out)
    data["worst_frames"] = worst
    (out / "metrics.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(data, plots, worst), encoding="utf-8")
    return data


def _markdown(data: dict[str, Any], plots: dict[str, str], worst: list[dict[str, Any]]) -> str:
    frames = data["frames"]
    lines = [f"# Evaluation of {data['model']} on {data.get('bag', 'a bag')}", ""]
    for key in ("model_spec", "image_topic", "output_bag", "mode", "device"):
        if key in data:
            lines.append(f"- {key.replace('_', ' ')}: `{data[key]}`")
    lines.append(f"- ground truth: {data['ground_truth'] or 'none given (no accuracy metrics)'}")
    if data["read_error"]:
        lines += ["", f"**{data['read_error']}. Everything below covers only the messages before that.**"]
    if "bags" in data:
        lines += _bag_table(data["bags"])
    lines += [
        "", "## Frames", "",
        "| | count |", "| --- | ---: |",
        f"| on the image topic | {frames['on_topic']} |",
        f"| processed | {frames['processed']} |",
        f"| evaluated against ground truth | {frames['evaluated']} |",
        f"| processed but without ground truth | {frames['without_ground_truth']} |",
        f"| ground truth without a frame | {frames['ground_truth_without_frame']} |",
    ]
    if frames["outputs_without_frame"]:
        lines.append(f"| node outputs matching no played frame | {frames['outputs_without_frame']} |")
    skip_tables = (("Skipped frames", frames["skipped"]), ("Unusable ground truth", frames["ground_truth_unusable"]))
    for title, reasons in skip_tables:
        if reasons:
            lines += ["", f"### {title}", "", "| reason | count |", "| --- | ---: |"]
            lines += [f"| {reason} | {count} |" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])]
    if "segmentation" in data:
        seg = data["segmentation"]
        lines += [
            "", "## Segmentation", "",
            f"Over {frames['evaluated']} frames and {seg['evaluated_pixels']} pixels "
            f"(ignore index {seg['ignore_index']}; classes absent from both ground truth and prediction are not averaged).",
            "", f"- mIoU: **{_format(seg['mean_iou'])}**", f"- pixel accuracy: {_format(seg['pixel_accuracy'])}",
            "", "| class | IoU |", "| --- | ---: |",
        ]
        lines += [f"| {name} | {_format(iou)} |" for name, iou in seg["class_iou"].items()]
    if "detection" in data:
        det = data["detection"]
        lines += [
            "", "## Detection (COCO protocol, pycocotools COCOeval)", "",
            f"Over {frames['evaluated']} frames, {det['ground_truth_boxes']} ground-truth boxes, "
            f"{det['detections']} detections (every detection above the evaluation's own low score "
            "threshold, at most 100 per image). Classes are matched by name; AP is averaged over "
            "classes that have ground truth; areas (small < 32², large > 96² pixels) are box areas.",
            "", "| AP | AP50 | AP75 | APs | APm | APl | AR@100 |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            "| " + " | ".join(f"{_format(det[key])}" for key in COCO_KEYS) + " |",
        ]
        if "deployment" in det:
            deployed = det["deployment"]
            lines += [
                "", f"At the deployment threshold (score >= {deployed['score_threshold']}, what the node publishes; "
                f"{deployed['detections']} detections): AP {_format(deployed['map'])}, AP50 {_format(deployed['ap50'])}, "
                f"AR@100 {_format(deployed['ar100'])}.",
            ]
        lines += ["", "| class | AP@[.5:.95] |", "| --- | ---: |"]
        lines += [f"| {name} | {_format(ap)} |" for name, ap in det["class_ap"].items()]
    if frames["processed"] and frames["evaluated"] == 0 and data["ground_truth"]:
        lines += ["", "**No frame could be matched with ground truth: no accuracy metrics.**"]
    lines += [
        "", "## Latency", "", LATENCY_NOTES[data.get("mode", "offline")], "",
        "| stage | p50 ms | p90 ms | p99 ms | mean ms |", "| --- | ---: | ---: | ---: | ---: |",
    ]
    for stage, stats in data["latency_ms"].items():
        lines.append(f"| {stage} | {stats['p50']:.2f} | {stats['p90']:.2f} | {stats['p99']:.2f} | {stats['mean']:.2f} |")
    fps = data["fps"]
    lines += ["", f"- frames per second, wall clock (reading, inference, writing): {_format(fps['wall_clock'], 1)}",
              f"- frames per second, pipeline only (1000 / mean total ms): {_format(fps['pipeline'], 1)}"]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{title}]({path})" for title, path in plots.items()]
    if worst:
        lines += ["", "## Worst frames", "", "Left: prediction, right: ground truth.", ""]
        for frame in worst:
            lines += [f"- frame {frame['index']} (stamp {frame['stamp']} ns): {frame['score']}", "",
                      f"  ![frame {frame['index']}]({frame['image']})", ""]
    return "\n".join(lines) + "\n"


def _bag_table(bags: list[dict[str, Any]]) -> list[str]:
    """The fleet job's per-bag rows; the sections after it are the total over the bags that ran."""
    failed = sum(row["status"] in ("failed", "incomplete") for row in bags)
    lines = [
        "", "## Bags", "",
        f"{len(bags)} bags, {failed} failed or incomplete. Everything after this table is the total over "
        "all bags with results, computed at once (not averaged per bag).", "",
        "| bag | status | frames processed / on topic | evaluated | mIoU or AP | fps | output |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in bags:
        status = row["status"] + (f": {row['reason']}" if row.get("reason") else "") + (
            f" ({row['note']})" if row.get("note") else "")
        frames = f"{row['frames_processed']} / {row['frames_on_topic']}" if "frames_processed" in row else ""
        metric = row.get("mean_iou", row.get("map"))
        lines.append(
            f"| `{row['bag']}` | {status.replace('|', '/')} | {frames} | {row.get('frames_evaluated', '')} | "
            f"{_format(metric) if 'frames_processed' in row else ''} | "
            f"{_format(row.get('fps'), 1) if 'frames_processed' in row else ''} | `{row['output']}` |"
        )
    return lines


def _plots(result: EvaluationResult, data: dict[str, Any], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    per_class = (
        ("IoU", data["segmentation"]["class_iou"]) if "segmentation" in data
        else ("AP@[.5:.95]", data["detection"]["class_ap"]) if "detection" in data else None
    )
    if per_class is not None:
        label, values = per_class
        shown = {name: value for name, value in values.items() if value is not None}
        if shown:
            figure, axes = plt.subplots(figsize=(max(4.0, 0.5 * len(shown) + 2), 3.5))
            axes.bar(range(len(shown)), list(shown.values()), color="tab:blue")
            axes.set_xticks(range(len(shown)), list(shown), rotation=60, ha="right")
            axes.set_ylim(0, 1)
            axes.set_ylabel(label)
            axes.set_title(f"{label} per class")
            figure.tight_layout()
            figure.savefig(out / "class_scores.png", dpi=100)
            plt.close(figure)
            plots[f"{label} per class"] = "class_scores.png"
    if result.latency.stages:
        figure, axes = plt.subplots(figsize=(6, 3.5))
        for stage in result.latency.stages:
            axes.hist(result.latency.values(stage), bins=40, alpha=0.6, label=stage)
        axes.set_xlabel("milliseconds per frame")
        axes.set_ylabel("frames")
        axes.set_title("Latency per stage")
        axes.legend()
        figure.tight_layout()
        figure.savefig(out / "latency.png", dpi=100)
        plt.close(figure)
        plots["Latency histogram"] = "latency.png"
    return plots


def _worst_frames(result: EvaluationResult, out: Path) -> list[dict[str, Any]]:
    entries = []
    if result.worst_frames:
        (out / "worst_frames").mkdir(exist_ok=True)
    for rank, worst in enumerate(result.worst_frames):
        path = Path("worst_frames") / f"{rank:02d}_frame{worst.prediction.index:06d}.png"
        picture = render_worst_frame(worst, result)
        cv2.imwrite(str(out / path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        entries.append({
            "index": worst.prediction.index, "stamp": worst.prediction.stamp,
            "score": worst.score_text, "image": str(path),
        })
    return entries


def render_worst_frame(worst: WorstFrame, result: EvaluationResult) -> npt.NDArray[np.uint8]:
    """Prediction (left) and ground truth (right) drawn on the frame's thumbnail, side by side."""
    frame, truth = worst.prediction, worst.truth
    image = frame.thumbnail
    if image is None:
        raise ValueError(f"frame {frame.index} has no thumbnail to draw on")
    names = tuple(result.class_names)
    if isinstance(truth, MaskTruth) and frame.labels is not None:
        palette = make_palette(result.palette, max(1, len(names)))
        left = overlay(image, colorize(frame.labels, palette))
        right = overlay(image, colorize(truth.labels, palette))
    elif isinstance(truth, BoxTruth) and frame.detections is not None:
        scale = image.shape[1] / frame.source_size[1]
        left = draw_detections(image, _scaled(frame.shown_detections()[0], scale), names)
        extra = tuple(sorted(set(truth.classes) - set(names)))
        all_names = names + extra
        truth_boxes = Detections((truth.boxes * scale).astype(np.float32), np.ones(len(truth.classes), np.float32),
                                 np.array([all_names.index(c) for c in truth.classes], np.int64))
        right = draw_detections(image, truth_boxes, all_names)
    else:
        raise ValueError(f"frame {frame.index}: prediction and ground truth are of different kinds")
    gap = np.full((image.shape[0], 8, 3), 255, np.uint8)
    return np.hstack([left, gap, right])


def _scaled(detections: Detections, scale: float) -> Detections:
    return Detections(detections.boxes * scale, detections.scores, detections.class_ids)
