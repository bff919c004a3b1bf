"""Fleet bag-eval throughput: frames per second of one job over the same bags with 1, 2, ... Ray workers.

    python bench/bench_fleet_eval.py [--workers 1 2] [--bags 4] [--frames-per-bag 12]
        [--model-spec centernet_mobilenetv3_coco] [--size 640 480] [--device cpu] [--gpus-per-task 0]
        [--no-baseline] [--out DIR] [--no-doc]

Needs neither ROS nor a GPU: the offline bag-eval path uses rosbags (pure Python), the model runs
on ONNX Runtime, and Ray (`pip install ray`, or the package's `fleet` extra) starts a local
cluster. It writes ``--bags`` bags (mcap, rgb8 frames made from test/fixtures/images at
``--size``, each frame with COCO ground truth on ``/gt``: the quokka's annotated box, scaled) and then,
for each worker count W, starts a local Ray cluster with W CPUs (start-up timed apart), runs
``run_fleet_eval`` over all bags with one CPU and one inference thread per task (``--force``: no
stored result is reused) and reports frames per second of the whole job (wall clock from
submitting the first bag to the merged result, so model loading per task counts). The baseline row
is plain ``run_bag_eval`` over the same bags one after another in this process with ONNX
Runtime's default threads (all cores): what bag-eval did before Ray.

Prints a markdown table and, unless ``--no-doc``, writes it into docs/evaluation.md (section
``fleet-bench-<N>cpus``, N = this machine's CPU count, so runs on different machines keep their own).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import update_section  # noqa: E402
from trt_perception.evaluation.bag_eval import BagEvalOptions, run_bag_eval  # noqa: E402
from trt_perception.evaluation.fleet import FleetOptions, import_ray, run_fleet_eval, start_ray  # noqa: E402
from trt_perception.evaluation.make_bag import make_bag  # noqa: E402

IMAGES = ROOT / "test" / "fixtures" / "images"
DOC = ROOT / "docs" / "evaluation.md"
QUOKKA_BOX = "quokka_annotations.json"


def machine() -> str:
    """CPU model, cores, memory, GPU (if nvidia-smi answers) and the versions that matter here."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    memory_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")), 0)
    import onnxruntime
    import ray

    return (f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, {memory_kib / 1024**2:.0f} GiB, Python "
            f"{platform.python_version()}, Ray {ray.__version__}, ONNX Runtime {onnxruntime.__version__}")


def write_bags(folder: Path, bags: int, frames: int, size: tuple[int, int]) -> list[Path]:
    """``bags`` mcap bags of ``frames`` frames each (the fixture photos in turn) with COCO ground truth."""
    sources = sorted(p for p in IMAGES.iterdir() if p.suffix in (".png", ".jpg") and p.name != "page.png")
    box = json.loads((IMAGES / QUOKKA_BOX).read_text())["bounding_boxes"][0]
    frame_dir = folder / "frames"
    frame_dir.mkdir()
    images: list[dict] = []
    annotations: list[dict] = []
    for index in range(frames):
        source = sources[index % len(sources)]
        picture = np.asarray(cv2.imread(str(source)))
        path = frame_dir / f"frame{index:04d}.png"
        cv2.imwrite(str(path), cv2.resize(picture, size, interpolation=cv2.INTER_AREA))
        images.append({"id": index + 1, "file_name": path.name})
        if source.stem == "quokka":
            sx, sy = size[0] / picture.shape[1], size[1] / picture.shape[0]
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": 1,
                                "bbox": [box["x1"] * sx, box["y1"] * sy, (box["x2"] - box["x1"]) * sx,
                                         (box["y2"] - box["y1"]) * sy]})
    coco = folder / "gt.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "bear"}]}))
    paths = []
    for bag in range(bags):
        path = folder / f"bag{bag:03d}"
        make_bag([frame_dir], path, "/cam", 10.0, coco=coco, gt_topic="/gt", start_ns=(1 + bag) * 10**9)
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--bags", type=int, default=4)
    parser.add_argument("--frames-per-bag", type=int, default=12)
    parser.add_argument("--model-spec", default="centernet_mobilenetv3_coco")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"), help="frame size")
    parser.add_argument("--device", default="cpu", help="pre/post-processing device of each task (cpu|gpu|auto)")
    parser.add_argument("--gpus-per-task", type=float, default=0.0)
    parser.add_argument("--no-baseline", action="store_true", help="skip plain bag-eval in this process")
    parser.add_argument("--out", type=Path, help="where bags and reports go (default: a temporary folder)")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/evaluation.md")
    args = parser.parse_args()

    ray = import_ray()
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_fleet_eval_"))
    bags = write_bags(work, args.bags, args.frames_per_bag, (args.size[0], args.size[1]))
    frames = args.bags * args.frames_per_bag
    per_bag = BagEvalOptions(bag=bags[0], model_spec=args.model_spec, image_topic="/cam", out=work / "out",
                             gt_topic="/gt", progress=False, device=args.device, worst_frames=0)
    rows: list[tuple[str, float | None, float]] = []
    if not args.no_baseline:
        start = time.perf_counter()
        for bag in bags:
            run_bag_eval(dataclasses.replace(per_bag, bag=bag, out=work / "baseline" / bag.name))
        wall = time.perf_counter() - start
        rows.append(("plain bag-eval, one bag after another, ONNX Runtime default threads", None, wall))
    for workers in args.workers:
        options = FleetOptions(bags=bags, per_bag=per_bag, workers=workers, gpus_per_task=args.gpus_per_task,
                               force=True, progress=False)
        start = time.perf_counter()
        start_ray(ray, options)
        ray_start = time.perf_counter() - start
        try:
            result = run_fleet_eval(options)
        finally:
            ray.shutdown()
        if result.failed:
            raise SystemExit(f"bags failed: {[(o.bag, o.error) for o in result.failed]}")
        rows.append((f"Ray, {workers} worker{'s' if workers > 1 else ''} (1 CPU, 1 inference thread each)",
                     ray_start, result.wall_seconds))

    one_worker = next((wall for name, started, wall in rows if name.startswith("Ray, 1 worker ")), None)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}.",
        f"`{' '.join(['python bench/bench_fleet_eval.py', *map(shlex.quote, sys.argv[1:])])}`: {args.bags} bags x "
        f"{args.frames_per_bag} frames ({args.size[0]}x{args.size[1]} rgb8, mcap, ground truth on /gt), "
        f"{args.model_spec}, pre/post-processing on {args.device}. fps = frames / wall clock of the job "
        "(model loading per task included; Ray start-up apart).",
        "",
        "| run | Ray start s | job wall s | frames | frames/s | vs 1 worker |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, started, wall in rows:
        ratio = f"{one_worker / wall:.2f}x" if one_worker else ""
        lines.append(f"| {name} | {'' if started is None else f'{started:.1f}'} | {wall:.2f} | {frames} | "
                     f"{frames / wall:.1f} | {ratio} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_doc:
        update_section(f"fleet-bench-{os.cpu_count()}cpus", table, DOC)
        print(f"written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
