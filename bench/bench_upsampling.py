"""Bilinear upsampling reduced to labels: numba's blend against the full OpenCV resize, side by side.

    python bench/bench_upsampling.py [--repeat N] [--out DIR] [--update-doc]

Cases at 640x480, 1280x720 and 1920x1080: the selfie model's real probabilities (256x256, threshold
0.5), PP-OCR's real text map (network size, threshold 0.3) and SegFormer-sized class scores (19
channels of 128x128, standard normal, argmax). Each case runs ``decoders.upsampling`` twice, the
two paths taking turns in rounds (``bench_floor.interleaved_medians_ms``), and checks that both
give the same labels. Writes ``bench_upsampling.md`` and ``.json`` to ``--out``; ``--update-doc``
puts the table into docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_common import RESOLUTIONS, camera_frame, size_name  # noqa: E402
from bench.bench_floor import interleaved_medians_ms  # noqa: E402
from bench.check_gpu import markdown_table  # noqa: E402
from bench.report import update_section  # noqa: E402
from trt_perception.decoders import upsampling  # noqa: E402
from trt_perception.decoders.upsampling import argmax_resized, threshold_resized  # noqa: E402
from trt_perception.pipeline import Pipeline  # noqa: E402


def model_map(model: str, size: tuple[int, int]) -> np.ndarray:
    """The model's real one-channel output on its sample frame resized to ``size``."""
    pipeline = Pipeline.from_spec(model)
    try:
        tensor, _ = pipeline.preprocessor(camera_frame(model, size), "BGR")
        [output] = pipeline.backend.infer({pipeline.input_name: tensor}).values()
    finally:
        pipeline.close()
    return np.ascontiguousarray(np.squeeze(output), np.float32)


def full_resize(fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """``fn`` with the compiled blend switched off (the full OpenCV resize)."""
    compiled = upsampling.compiled_kernels

    def run() -> np.ndarray:
        upsampling.compiled_kernels = lambda: None  # type: ignore[assignment]
        try:
            return fn()
        finally:
            upsampling.compiled_kernels = compiled

    return run


def rows(repeat: int) -> list[dict]:
    scores = np.random.default_rng(19).standard_normal((128, 128, 19)).astype(np.float32)
    table = []
    for size in RESOLUTIONS:
        cases: dict[str, Callable[[], np.ndarray]] = {
            "selfie 256x256, threshold": partial(threshold_resized, model_map("selfie_segmentation", size), size, 0.5),
            "ppocr text map, threshold": partial(threshold_resized, model_map("ppocrv4_det", size), size, 0.3),
            "19 classes 128x128, argmax": partial(argmax_resized, scores, size, np.uint8),
        }
        timed = {}
        for name, fn in cases.items():
            timed[f"{name}|compiled"] = fn
            timed[f"{name}|full"] = full_resize(fn)
        medians = interleaved_medians_ms(timed, repeat)
        for name, fn in cases.items():
            table.append({
                "frame": size_name(size), "case": name, "compiled_ms": medians[f"{name}|compiled"],
                "full_resize_ms": medians[f"{name}|full"],
                "speed-up": medians[f"{name}|full"] / medians[f"{name}|compiled"],
                "same labels": bool(np.array_equal(fn(), full_resize(fn)())),
            })
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "trt_perception_bench_upsampling")
    parser.add_argument("--update-doc", action="store_true")
    args = parser.parse_args()
    if upsampling.compiled_kernels() is None:
        raise SystemExit("numba is not installed: there is no compiled path to compare")
    table = rows(args.repeat)
    header = (f"`python bench/bench_upsampling.py --repeat {args.repeat}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{platform.node()} ({platform.machine()}, {cv2.getNumThreads()} OpenCV threads), OpenCV {cv2.__version__}; "
              f"median ms, the two paths taking turns:\n\n")
    report = header + markdown_table(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_upsampling.md").write_text(report)
    (args.out / "bench_upsampling.json").write_text(json.dumps(table, indent=2))
    print(report)
    if args.update_doc:
        update_section("upsampling-cpu", report)
    return 0 if all(row["same labels"] for row in table) else 1


if __name__ == "__main__":
    raise SystemExit(main())
