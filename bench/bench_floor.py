"""Issue 14: the stages around the network against their physical floor, ratios from one run.

    python bench/bench_floor.py [--part gpu|cpu|node|all] [--repeat 200] [--node-seconds 10] [--out DIR] [--no-doc]

Part ``gpu`` (CuPy with a CUDA device): for selfie_segmentation and ppocrv4_det (with the half-pixel
sampling the GPU kernel implements, ``kernel_spec``) on bgr8 frames
(640x480, 1280x720, 1920x1080) the whole per-frame sequence around the network through
``SegmentationFramePath``: upload, preprocessing, decoding to labels (optionally colour mask and
overlay) and the download of what is published. The network is replaced by its real output (ONNX
Runtime on the CPU once, uploaded once), so its input and output stay on the device as with
TensorRT. Timed per frame with the host clock around the calls (steady state: median after
warm-up; Python included), and between CUDA events: the whole frame, ``upload`` alone and
``publish`` alone. Variants: frame already in the page-locked staging buffer (as a
transport writing there), frame in ordinary memory (one host copy more), and ``mapped`` (Jetson's
zero-copy buffers, as far as a discrete GPU shows it: its kernels read and write host memory over
the bus). The previous per-stage GPU path (pageable copies, a launch per step) is timed alongside.

The floor, measured in the same run: one page-locked host->device copy of the frame's bytes and one
device->host copy of the published bytes (CUDA events, median), plus the kernels' bytes (frame and
network input; scores and published images) over the device copy bandwidth measured here. Each row
also checks the published labels / colours / overlay against the CPU path (``identical``).

Part ``cpu``: on this machine, 1920x1080 bgr8 selfie segmentation: our pre + post (labels; and with
the colour mask) against one copy of the frame (``np.copyto``; frames rotate among 8 copies so no
timing reads a frame still in the caches) and against the naive seed-style pipeline (``bench/run_bench.py``'s ``Naive``),
all six timings taking turns in rounds (``interleaved_medians_ms``); detection post-processing (decode, threshold, NMS) of
a CenterNet-style 100-row output and a YOLOv8 raw head (8400 candidates, 80 classes) against the
naive per-row loop, with equality of the kept detections.

Part ``node`` (rclpy importable: the repo's ``.venv``): the node end to end over DDS next to a relay
hop at 640x480, 1280x720 and 1920x1080 (``run_bench.py --part node``, whose table it writes), and
from it issue 14's node goal per frame size: the shipped node's (raw intake) p50 <= 1.2 x (relay p50 +
the inference time the node reports). Each variant is measured for ``--node-seconds`` per size (10 s:
300 frames at 30 Hz, in 5 windows taking turns with the others): the goal's margin at 640x480 is a
few tenths of a millisecond, and with 2.5 s (run_bench's default, a p50 of 75 frames) the ratio
ranged over 1.04-1.29 in eleven runs on this VM, with 10 s over 1.08-1.29 in thirteen (11 met).
The inference in the reference is the node's own, averaged over its windows (bench_transport_e2e's
``window_stage_means``); with it, ten runs gave 1.07-1.19 (10 met, median 1.15).

``--part all`` (the default) runs every part this machine can: ``gpu`` where CuPy sees a CUDA
device, ``node`` where rclpy is importable (each skipped with its reason otherwise), and ``cpu``;
then it prints every goal measured, ours next to its reference, in one table
(``bench_floor_goals.md``).

Writes ``bench_floor.json``/``.md`` to ``--out`` and, unless ``--no-doc``, the tables into
docs/performance.md (sections ``floor-gpu``, ``floor-cpu``, ``run_bench-node``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.check_gpu import markdown_table  # noqa: E402
from bench.report import update_section  # noqa: E402
from bench.bench_common import camera_frame, median_ms  # noqa: E402
from bench.run_bench import Naive  # noqa: E402
from trt_perception.decoders import DetectionFilter, create_decoder  # noqa: E402
from trt_perception.decoders.segmentation import SegmentationDecoder  # noqa: E402
from trt_perception.geometry import ResizeGeometry  # noqa: E402
from trt_perception.pipeline import Pipeline, source_detections  # noqa: E402
from trt_perception.results import Detections  # noqa: E402
from trt_perception.spec import ModelSpec, load_model_spec  # noqa: E402
from trt_perception.visualize import as_rgb, colorize, overlay, prepare_colouring  # noqa: E402

GPU_MODELS = ("selfie_segmentation", "ppocrv4_det")
SIZES = [(480, 640), (720, 1280), (1080, 1920)]
GPU_GOAL_MS, GPU_GOAL_RATIO = 0.3, 1.4
CPU_COPY_GOAL, CPU_NAIVE_GOAL, DET_8400_GOAL = 2.0, 25.0, 10.0
NODE_SECONDS = 10.0  # measured seconds per variant and frame size in the node part
ALPHA = 0.5


def interleaved_medians_ms(cases: dict[str, Callable[[], Any]], repeat: int, rounds: int = 5) -> dict[str, float]:
    """Median wall-clock milliseconds of each case, the cases taking turns in ``rounds`` rounds of
    ``repeat / rounds`` calls each (after 2 warm-up calls per round), so that a slower or faster
    spell of a shared machine falls on all of them and their ratios stay put."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    per_round = max(1, repeat // rounds)
    for _ in range(rounds):
        for name, fn in cases.items():
            for _ in range(2):
                fn()
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in samples.items()}


def segmentation_decoder(pipeline: Pipeline) -> SegmentationDecoder:
    """The pipeline's decoder, which the benchmark's models make a segmentation decoder."""
    decoder = pipeline.decoder
    assert isinstance(decoder, SegmentationDecoder), type(decoder)
    return decoder


# --------------------------------------------------------------------------- GPU


class GpuFloor:
    """Copy times and device bandwidth measured on this GPU (CUDA events, medians)."""

    def __init__(self, cupy: Any, repeat: int) -> None:
        from trt_perception.gpu.frame_path import PinnedBuffer

        self.cupy, self.repeat = cupy, repeat
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._host = PinnedBuffer(64 << 20)
        self._device = cupy.empty(64 << 20, cupy.uint8)
        big = cupy.empty(1 << 30, cupy.uint8)
        big_copy = cupy.empty_like(big)
        milliseconds = self.event_ms(lambda: big_copy.__setitem__(Ellipsis, big), 20)
        self.device_bandwidth = 2 * big.nbytes / (milliseconds * 1e-3)  # bytes read + written per second

    def event_ms(self, fn: Callable[[], Any], repeat: int | None = None) -> float:
        cupy = self.cupy
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        samples = []
        with self.stream:
            for iteration in range(5 + (repeat or self.repeat)):
                start.record(self.stream)
                fn()
                end.record(self.stream)
                end.synchronize()
                if iteration >= 5:
                    samples.append(cupy.cuda.get_elapsed_time(start, end))
        return statistics.median(samples)

    def copy_ms(self, size: int, to_device: bool) -> float:
        """One page-locked copy of ``size`` bytes, as the frame path makes it."""
        runtime = self.cupy.cuda.runtime
        device, host = self._device.data.ptr, self._host.pointer
        if to_device:
            return self.event_ms(lambda: runtime.memcpyAsync(device, host, size, runtime.memcpyHostToDevice, self.stream.ptr))
        return self.event_ms(lambda: runtime.memcpyAsync(host, device, size, runtime.memcpyDeviceToHost, self.stream.ptr))

    def kernel_ms(self, size: int) -> float:
        """Bytes a kernel must read + write, over the device bandwidth."""
        return size / self.device_bandwidth * 1e3


def gpu_rows(repeat: int) -> tuple[list[dict], dict]:
    from trt_perception.gpu import require_cupy
    from trt_perception.gpu.frame_path import SegmentationFramePath
    from trt_perception.gpu.preprocess import GpuPreprocessor
    from trt_perception.gpu.segmentation import GpuSegmentationDecoder
    from trt_perception.gpu.visualize import GpuVisualizer
    from trt_perception.visualize import make_palette

    cupy = require_cupy()
    floor = GpuFloor(cupy, repeat)
    info = {"gpu": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "cupy": cupy.__version__,
            "device_bandwidth_GBps": floor.device_bandwidth / 1e9}
    rows = []
    for name in GPU_MODELS:
        spec = kernel_spec(name)
        pipeline = Pipeline.from_spec(spec, backend_kind="onnxruntime")
        palette = make_palette(spec.palette, len(pipeline.class_names))
        preprocessor = GpuPreprocessor(spec.input)
        decoder = GpuSegmentationDecoder(segmentation_decoder(pipeline))
        visualizer = GpuVisualizer(palette)
        for size in SIZES:
            frame = camera_frame(name, size)
            tensor, geometry = pipeline.preprocessor(frame, "BGR")
            host_outputs = pipeline.backend.infer({pipeline.input_name: tensor})
            outputs = {key: cupy.asarray(value) for key, value in host_outputs.items()}  # the network's outputs, on the device
            labels = segmentation_decoder(pipeline).decode(host_outputs, geometry, True)
            colours = colorize(labels, palette)
            expected = (labels, colours, overlay(as_rgb(frame, "BGR"), colours, ALPHA))
            scores = outputs[spec.decoder["output"]]
            # measured once per frame size: the visuals' added floor is then the added bytes' alone
            upload_floor, pre_floor = floor.copy_ms(frame.nbytes, True), floor.kernel_ms(frame.nbytes + tensor.nbytes)
            for visuals in (False, True):
                published_bytes = labels.nbytes + 2 * colours.nbytes * visuals
                floor_parts = {
                    "upload": upload_floor,
                    "pre_kernel": pre_floor,
                    "post_kernel": floor.kernel_ms(scores.nbytes + published_bytes + frame.nbytes * visuals),
                    "download": floor.copy_ms(published_bytes, False),
                }
                floor_ms = sum(floor_parts.values())
                base = {"model": name, "frame": f"{size[1]}x{size[0]}", "outputs": "labels+mask+overlay" if visuals else "labels"}
                for variant in ("staged", "pageable", "mapped"):
                    path = SegmentationFramePath(preprocessor, decoder, palette, mapped=variant == "mapped")
                    staged = path.staging(frame.nbytes).reshape(frame.shape)
                    np.copyto(staged, frame)
                    source = frame if variant == "pageable" else staged
                    state: dict = {}

                    def run_frame() -> None:
                        network_input, frame_geometry = path.upload(source, "BGR")
                        state["published"] = path.publish(outputs, frame_geometry, True, visuals, visuals, ALPHA, "BGR")
                        state["input"] = network_input

                    ours = median_ms(run_frame, repeat)
                    gpu_ms = floor.event_ms(run_frame)
                    upload_ms = floor.event_ms(lambda: path.upload(source, "BGR"))
                    publish_ms = floor.event_ms(lambda: path.publish(outputs, geometry, True, visuals, visuals, ALPHA, "BGR"))
                    published = state["published"]
                    got = (published.labels, published.color_mask, published.overlay)
                    network_input = cupy.asnumpy(state["input"])
                    identical = network_input.shape == tensor.shape and np.allclose(network_input, tensor, rtol=0, atol=1e-6)
                    identical = identical and all(
                        np.array_equal(a, b) for a, b in zip(got[: 1 + 2 * visuals], expected[: 1 + 2 * visuals]))
                    rows.append({**base, "path": f"frame path, {variant}", "ours_ms": ours, "gpu_ms": gpu_ms,
                                 "floor_ms": floor_ms, "ratio": ours / floor_ms,
                                 "goal": f"<= {GPU_GOAL_RATIO}x" + (f", <= {GPU_GOAL_MS} ms" if not visuals and size == (1080, 1920) else ""),
                                 "identical": identical, "upload_call_ms": upload_ms, "publish_call_ms": publish_ms,
                                 **{f"floor_{k}_ms": v for k, v in floor_parts.items()}})

                def per_stage() -> None:  # the previous GPU path: pageable copies, a launch per step
                    network_input, frame_geometry = preprocessor(frame, "BGR")
                    device_labels = decoder.decode(outputs, frame_geometry, True)
                    device_labels.get()
                    if visuals:
                        visualizer.colorize(device_labels).get()
                        image, step = preprocessor.last_upload
                        visualizer.overlay(device_labels, image, step, "BGR", ALPHA).get()

                previous = median_ms(per_stage, repeat)
                rows.append({**base, "path": "per-stage (before)", "ours_ms": previous, "gpu_ms": float("nan"),
                             "floor_ms": floor_ms, "ratio": previous / floor_ms, "goal": "", "identical": "",
                             "upload_call_ms": float("nan"), "publish_call_ms": float("nan"),
                             **{f"floor_{k}_ms": v for k, v in floor_parts.items()}})
                print(markdown_table(rows[-4:]), flush=True)
        pipeline.close()
    return rows, info


def gpu_goals(rows: list[dict]) -> list[dict]:
    """Issue 14's GPU goals at 1920x1080 (frame staged in page-locked memory), ours next to the floor."""
    goals = []
    for model in GPU_MODELS:
        found = {row["outputs"]: row for row in rows
                 if row["model"] == model and row["frame"] == "1920x1080" and row["path"] == "frame path, staged"}
        if len(found) < 2:
            continue
        labels, visuals = found["labels"], found["labels+mask+overlay"]
        goals.append({"goal": f"{model}: upload + pre + decode + labels download <= {GPU_GOAL_MS} ms and <= {GPU_GOAL_RATIO}x floor",
                      "floor_ms": labels["floor_ms"], "ours_ms": labels["ours_ms"], "ratio": labels["ratio"],
                      "met": labels["ours_ms"] <= GPU_GOAL_MS and labels["ratio"] <= GPU_GOAL_RATIO and labels["identical"] is True})
        added, added_floor = visuals["ours_ms"] - labels["ours_ms"], visuals["floor_ms"] - labels["floor_ms"]
        goals.append({"goal": f"{model}: colour mask + overlay drawn and downloaded too: added time <= {GPU_GOAL_RATIO}x floor of the added bytes",
                      "floor_ms": added_floor, "ours_ms": added, "ratio": added / added_floor,
                      "met": added / added_floor <= GPU_GOAL_RATIO and visuals["identical"] is True})
    return goals


def cpu_goals(rows: list[dict]) -> list[dict]:
    """Issue 14's CPU goals, ours next to the reference measured in the same run."""
    by_case = {row["case"]: row for row in rows}
    labels = by_case["selfie pre + post (labels)"]
    coloured = by_case["selfie pre + post (labels + colour mask)"]
    small, large = (row for row in rows if row["case"].startswith("detection"))
    return [
        {"goal": f"selfie 1080p pre + post <= {CPU_COPY_GOAL}x one copy of the frame", "reference_ms": labels["copy_ms"],
         "ours_ms": labels["ours_ms"], "ratio": labels["ours_per_copy"], "met": labels["ours_per_copy"] <= CPU_COPY_GOAL},
        {"goal": f"selfie 1080p pre + post (with colour mask) >= {CPU_NAIVE_GOAL}x faster than naive", "reference_ms": coloured["naive_ms"],
         "ours_ms": coloured["ours_ms"], "ratio": coloured["naive_per_ours"], "met": coloured["naive_per_ours"] >= CPU_NAIVE_GOAL},
        {"goal": "detection post, 100 rows: no slower than the naive loop (same detections)", "reference_ms": small["naive_ms"],
         "ours_ms": small["ours_ms"], "ratio": small["naive_per_ours"], "met": small["naive_per_ours"] >= 1 and small["identical"]},
        {"goal": f"detection post, YOLOv8 8400 candidates: >= {DET_8400_GOAL}x faster than naive (same detections)",
         "reference_ms": large["naive_ms"], "ours_ms": large["ours_ms"], "ratio": large["naive_per_ours"],
         "met": large["naive_per_ours"] >= DET_8400_GOAL and large["identical"]},
    ]


# --------------------------------------------------------------------------- CPU


def yolov8_head(rng: np.random.Generator, candidates: int = 8400, classes: int = 80) -> np.ndarray:
    """A YOLOv8 raw head ``[1, 4 + classes, candidates]``: boxes cx, cy, w, h inside the content of a
    1920x1080 frame letterboxed into 640x640 (rows 140..500) and class probabilities, most near
    zero and a few hundred candidates above 0.25 (half of them clustered, so NMS has work)."""
    low, high = np.array([40.0, 180.0]), np.array([600.0, 460.0])
    centres = rng.uniform(low, high, (candidates, 2))
    cluster = rng.integers(0, 60, candidates)
    centres[: candidates // 2] = rng.uniform(low, high, (60, 2))[cluster[: candidates // 2]] + rng.normal(0, 4, (candidates // 2, 2))
    sizes = rng.uniform(10, 80, (candidates, 2))
    probabilities = rng.uniform(0, 0.05, (candidates, classes))
    strong = rng.random(candidates) < 0.05
    probabilities[strong, rng.integers(0, classes, int(strong.sum()))] = rng.uniform(0.25, 0.95, int(strong.sum()))
    head = np.concatenate([centres, sizes, probabilities], axis=1).T[None].astype(np.float32)
    return np.ascontiguousarray(head)


def naive_yolov8(head: np.ndarray, geometry: ResizeGeometry, naive: Naive) -> list[list[float]]:
    """Seed-style YOLOv8 post-processing: a Python loop over the candidates (class argmax, threshold,
    box corners with the letterbox offset removed), then ``Naive``'s per-row loop and Python NMS."""
    top, left = geometry.offset
    threshold = naive.spec.detection.score_threshold
    rows = []
    for column in head[0].T:
        class_scores = column[4:]
        class_id = int(np.argmax(class_scores))
        score = float(class_scores[class_id])
        if score > threshold:
            cx, cy, w, h = (float(v) for v in column[:4])
            rows.append([cx - w / 2 - left, cy - h / 2 - top, cx + w / 2 - left, cy + h / 2 - top, score, class_id])
    return naive.postprocess({naive.decoder_config["output"]: np.asarray(rows, np.float64).reshape(1, -1, 6)}, geometry, head)


def same_detections(ours: Detections, naive: list[list[float]]) -> bool:
    """Same classes in the same order and boxes/scores equal to float32 rounding of the naive loop's
    (which keeps every box NMS keeps; ours stops at the filter's limit)."""
    naive = naive[: len(ours)] if len(ours) == 100 else naive
    if len(ours) != len(naive):
        return False
    if not naive:
        return True
    reference = np.asarray(naive, np.float64)
    return bool(np.array_equal(ours.class_ids, reference[:, 5].astype(np.int64))
                and np.allclose(ours.boxes, reference[:, :4], rtol=0, atol=1e-3)
                and np.allclose(ours.scores, reference[:, 4], rtol=0, atol=1e-6))


class Rotation:
    """Hands out ``count`` different frames in turn, so that no timing runs on a frame the caches
    still hold from the previous call (a camera delivers a new frame each time)."""

    def __init__(self, frame: np.ndarray, count: int = 8) -> None:
        self.frames = [np.ascontiguousarray(np.roll(frame, 7 * index, axis=1)) for index in range(count)]
        self.targets = [np.empty_like(frame) for _ in range(count)]
        self.index = 0

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        self.index = (self.index + 1) % len(self.frames)
        return self.frames[self.index], self.targets[self.index]


def kernel_spec(name: str) -> ModelSpec:
    """The bundled spec with OpenCV's half-pixel sampling where it asks for another grid: the GPU kernel
    implements half-pixel sampling only (the bundled selfie spec's MediaPipe corner sampling runs on the
    CPU preprocessor, GpuPipeline's host fallback)."""
    spec = load_model_spec(name)
    return dataclasses.replace(spec, input=dataclasses.replace(spec.input, sampling="half_pixel"))


def cpu_rows(repeat: int) -> list[dict]:
    rows = []
    size = (1080, 1920)
    name = "selfie_segmentation"
    spec = load_model_spec(name)
    pipeline = Pipeline.from_spec(spec)
    naive = Naive(spec, pipeline)
    frames = Rotation(camera_frame(name, size))
    frame = frames.frames[0]
    tensor, geometry = pipeline.preprocessor(frame, "BGR")
    outputs = pipeline.backend.infer({pipeline.input_name: tensor})
    naive_tensor, naive_geometry = naive.preprocess(frame)
    naive_outputs = naive.infer(naive_tensor)
    labels = segmentation_decoder(pipeline).decode(outputs, geometry, True)
    prepare_colouring(spec.num_classes)  # as the segmentation node does when it publishes colours
    timings = interleaved_medians_ms({
        "copy": lambda: np.copyto(*frames.next()[::-1]),
        "ours_pre": lambda: pipeline.preprocessor(frames.next()[0], "BGR"),
        "ours_post": lambda: pipeline.decoder.decode(outputs, geometry, True),
        "ours_colour": lambda: colorize(labels, naive.palette),
        "naive_pre": lambda: naive.preprocess(frames.next()[0]),
        "naive_post": lambda: naive.postprocess(naive_outputs, naive_geometry, frames.next()[0]),
    }, repeat)
    copy_ms, ours_pre, ours_post, ours_colour, naive_pre, naive_post = (
        timings[name] for name in ("copy", "ours_pre", "ours_post", "ours_colour", "naive_pre", "naive_post")
    )
    ours_total = ours_pre + ours_post
    base = {"frame": "1920x1080", "copy_ms": copy_ms}
    rows.append({"case": "selfie pre + post (labels)", **base, "ours_ms": ours_total, "naive_ms": float("nan"),
                 "ours_per_copy": ours_total / copy_ms, "naive_per_ours": float("nan"), "goal": f"<= {CPU_COPY_GOAL}x copy",
                 "identical": ""})
    rows.append({"case": "selfie pre + post (labels + colour mask)", **base, "ours_ms": ours_total + ours_colour,
                 "naive_ms": naive_pre + naive_post, "ours_per_copy": (ours_total + ours_colour) / copy_ms,
                 "naive_per_ours": (naive_pre + naive_post) / (ours_total + ours_colour), "goal": f">= {CPU_NAIVE_GOAL}x faster than naive",
                 "identical": ""})
    pipeline.close()
    rows.extend(detection_rows(repeat))
    return rows


def detection_rows(repeat: int) -> list[dict]:
    """Detection post-processing against ``Naive`` (CenterNet's spec: threshold 0.3, NMS IoU 0.45)."""
    rng = np.random.default_rng(14)
    spec = load_model_spec("centernet_mobilenetv3_coco")
    pipeline = Pipeline.from_spec(spec)
    naive = Naive(spec, pipeline)
    output = naive.decoder_config["output"]
    detection_filter = pipeline.detection_filter
    # CenterNet rows [x1, y1, x2, y2, score, class] in its 512x512 input, 100 rows.
    geometry = pipeline.preprocessor.geometry((1080, 1920))
    corner = rng.uniform(0, 380, (100, 2))
    rows_tensor = np.hstack([corner, corner + rng.uniform(8, 120, (100, 2)), rng.uniform(0, 1, (100, 1)),
                             rng.integers(0, 80, (100, 1))]).astype(np.float32)[None]
    rows = [detection_case("100 rows (CenterNet)", pipeline.decoder, {output: rows_tensor}, geometry, detection_filter,
                           lambda: naive.postprocess({output: rows_tensor}, geometry, rows_tensor), repeat, "no slower than naive")]
    geometry = ResizeGeometry.letterbox((1080, 1920), (640, 640), "centered")
    head = yolov8_head(rng)
    decoder = create_decoder("detection", {"type": "yolo", "output": "out", "version": "v8"}, 80)
    rows.append(detection_case("8400 candidates (YOLOv8 raw head)", decoder, {"out": head}, geometry, detection_filter,
                               lambda: naive_yolov8(head, geometry, naive), max(5, repeat // 10),
                               f">= {DET_8400_GOAL}x faster than naive"))
    pipeline.close()
    return rows


def detection_case(case: str, decoder: Any, outputs: dict, geometry: ResizeGeometry, detection_filter: DetectionFilter,
                   naive: Callable[[], list], repeat: int, goal: str) -> dict:
    def ours() -> Detections:
        return source_detections(decoder, outputs, geometry, detection_filter)

    ours_ms, naive_ms = median_ms(ours, repeat), median_ms(naive, repeat, warmup=2)
    return {"case": f"detection post, {case}", "frame": "1920x1080", "copy_ms": float("nan"), "ours_ms": ours_ms,
            "naive_ms": naive_ms, "ours_per_copy": float("nan"), "naive_per_ours": naive_ms / ours_ms, "goal": goal,
            "identical": same_detections(ours(), naive())}


# --------------------------------------------------------------------------- node


def node_goals(rows: list[dict]) -> list[dict]:
    """Issue 14's node goal per frame size, from ``bench_transport_e2e.measure_e2e`` rows: the shipped
    node (raw intake) against the relay hop plus the model's inference, measured in the same run."""
    from bench.bench_transport_e2e import NODE_LATENCY_GOAL, SHIPPED_NODE, latency_goal_ratio

    relay = {row["frame"]: row["p50"] for row in rows if row["stages"] is None and row["p50"] is not None}
    goals = []
    for row in rows:
        if row["variant"] != SHIPPED_NODE or row["p50"] is None or row["frame"] not in relay:
            continue
        ratio = latency_goal_ratio(row, relay[row["frame"]])
        goals.append({"goal": f"node {row['frame']} over DDS: p50 <= {NODE_LATENCY_GOAL}x (relay hop p50 + inference)",
                      "reference_ms": relay[row["frame"]] + row["stages"]["inference"], "ours_ms": row["p50"],
                      "ratio": ratio, "met": ratio <= NODE_LATENCY_GOAL})
    return goals


def positive_seconds(text: str) -> float:
    """``--node-seconds``: a number of seconds above 0."""
    seconds = float(text)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return seconds


def node_rows(args: argparse.Namespace, command: str) -> list[dict] | None:
    """``run_bench.py --part node`` at the three frame sizes (writing its table), or None when rclpy is
    not importable (the reason printed)."""
    from bench.run_bench import NODE_RATE_HZ, node_part

    node_args = argparse.Namespace(sizes=SIZES, node_rate_hz=NODE_RATE_HZ, node_seconds=args.node_seconds,
                                   out=args.out, no_doc=args.no_doc)
    return node_part(node_args, command)


def parts_to_run(part: str) -> list[str]:
    """The parts ``--part`` names; for ``all`` those this machine can run (the others skipped, saying why)."""
    if part != "all":
        return [part]
    from trt_perception.gpu import gpu_available

    parts = []
    if gpu_available():
        parts.append("gpu")
    else:
        print("GPU part skipped: CuPy with a CUDA device is not available here.", flush=True)
    parts.append("cpu")
    parts.append("node")  # skipped by node_part, with its reason, where rclpy is missing
    return parts


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("gpu", "cpu", "node", "all"), default="all")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--node-seconds", type=positive_seconds, default=NODE_SECONDS,
                        help="node: measured seconds per variant and size")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "trt_perception_bench_floor")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python bench/bench_floor.py " + " ".join(sys.argv[1:])
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = f"{platform.node()} ({platform.machine()}, {__import__('os').cpu_count()} CPUs), OpenCV {cv2.__version__}, numpy {np.__version__}"
    results: dict[str, Any] = {"command": command, "when": stamp, "machine": machine}
    parts = parts_to_run(args.part)
    goals: list[dict] = []
    if "gpu" in parts:
        rows, info = gpu_rows(args.repeat)
        results["gpu"], results["gpu_info"] = rows, info
        text = (f"`{command}`, {stamp}, {machine}; GPU {info['gpu']}, CuPy {info['cupy']}, device copy bandwidth "
                f"{info['device_bandwidth_GBps']:.0f} GB/s (read + write). Median of {args.repeat} frames after warm-up; "
                "`ours_ms` is host wall-clock per frame (Python included), `gpu_ms` the same frames between CUDA events; "
                "`upload_call_ms` / `publish_call_ms` the two calls alone; `ratio` = ours / floor.\n\n"
                "Goals (1920x1080, frame staged in page-locked memory; ratio = ours / floor, for the colour mask and "
                "overlay: added time / floor of the added bytes):\n\n" + markdown_table(gpu_goals(rows))
                + "\nAll rows:\n\n" + markdown_table(rows))
        (args.out / "bench_floor_gpu.md").write_text(text)
        if not args.no_doc:
            update_section("floor-gpu", text)
        goals += [{"goal": goal["goal"], "reference_ms": goal["floor_ms"], "ours_ms": goal["ours_ms"],
                   "ratio": goal["ratio"], "met": goal["met"]} for goal in gpu_goals(rows)]
    if "cpu" in parts:
        rows = cpu_rows(args.repeat)
        results["cpu"] = rows
        text = (f"`{command}`, {stamp}, {machine}; {cv2.getNumThreads()} OpenCV threads. Median of {args.repeat} runs "
                "(naive detection: fewer); the segmentation cases take turns in 5 rounds, so that a slower or faster "
                "spell of the CPU, which is shared with other work, falls on all of them. The ratios are from one run.\n\n"
                "Goals (ratio: ours / one frame copy for the first, naive / ours for the others):\n\n"
                + markdown_table(cpu_goals(rows)) + "\nAll rows:\n\n" + markdown_table(rows))
        (args.out / "bench_floor_cpu.md").write_text(text)
        if not args.no_doc:
            update_section("floor-cpu", text)
        print(text)
        goals += cpu_goals(rows)
    if "node" in parts:
        node = node_rows(args, command)
        if node is not None:
            results["node"] = node
            goals += node_goals(node)
    (args.out / "bench_floor.json").write_text(json.dumps(results, indent=1, default=str))
    if len(parts) > 1 and goals:
        summary = (f"Issue 14's goals measured by `{command}`, {stamp}, {machine} (reference: the floor, one frame "
                   "copy, the naive pipeline or the relay hop + inference, as each goal says; all from this run):\n\n"
                   + markdown_table(goals))
        (args.out / "bench_floor_goals.md").write_text(summary)
        print("\n" + summary, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
