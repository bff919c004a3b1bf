"""Issue 7's benchmark: our pipeline vs a naive baseline per stage, then the node end to end over DDS.

    source scripts/ros_env.sh && python bench/run_bench.py [--part all|pipeline|node] [--repeat 30]
        [--sizes 640x480 1280x720 1920x1080] [--node-seconds 2.5] [--node-rate-hz 30] [--out DIR] [--no-doc]

One command, one run, two parts (``--part`` picks one):

Part ``pipeline``: for selfie_segmentation, ppocrv4_det and centernet_mobilenetv3_coco at
640x480, 1280x720 and 1920x1080 (bgr8 frames, as a camera driver sends them) it times

* ``naive``: what seed scripts do: cv2.resize -> numpy normalize/transposes -> backend (fresh
  outputs) -> full-resolution bilinear upsample of the scores -> argmax/threshold -> palette
  colouring; for detection a per-row Python loop and a Python NMS;
* ``ours-cpu``: ``Pipeline`` (its own stage timings) + ``visualize.colorize``;
* ``ours-gpu`` (when CuPy sees a GPU): ``GpuPreprocessor`` (upload + one kernel) ->
  backend -> ``GpuSegmentationDecoder`` + ``GpuVisualizer`` (download of labels and colours
  included) or ``filter_detections_gpu``. The backend is the spec's (ONNX Runtime on the CPU
  here), so the GPU rows' inference includes the device->host->device copies a TensorRT
  backend would not need.

Medians over ``--repeat`` frames after warm-up, in milliseconds. For the GPU stages it also gives
the physical floor: bytes each stage must move over the memory bandwidth measured here with a
CuPy copy (device stages) or a host->device copy (uploads).

Part ``node``: end-to-end latency (frame published -> labels received) and throughput of the real
``segmentation_node`` process over DDS at ``--node-rate-hz`` input, next to a plain relay hop, with
rclpy intake, raw CDR intake and jpeg input: ``bench_transport_e2e.measure_e2e`` with the shipped
Fast DDS profile in every process. Needs rclpy (the repo's .venv); without it the part is skipped
with the reason printed (e.g. on a GPU machine without ROS).

Writes ``bench.json``/``bench.md`` and ``node_e2e.json``/``node_e2e.md`` to ``--out`` and, unless
``--no-doc``, the tables into docs/performance.md (sections ``run_bench-cpu`` or ``run_bench-gpu``,
and ``run_bench-node``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_common import MODELS, RESOLUTIONS, camera_frame, parse_size, size_name  # noqa: E402
from bench.report import update_section  # noqa: E402
from trt_perception.pipeline import Pipeline  # noqa: E402
from trt_perception.preprocess import affine_normalization  # noqa: E402
from trt_perception.spec import ModelSpec, load_model_spec  # noqa: E402
from trt_perception.visualize import colorize, make_palette, prepare_colouring  # noqa: E402

NODE_RATE_HZ = 30.0
NODE_SECONDS = 2.5


def command_line() -> str:
    """How this script was started, for the reports."""
    return " ".join(["python bench/run_bench.py", *sys.argv[1:]])


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


class Naive:
    """The per-frame code of the seed scripts, kept deliberately plain."""

    def __init__(self, spec: ModelSpec, pipeline: Pipeline) -> None:
        self.spec = spec
        self.backend = pipeline.backend
        self.input_name = pipeline.input_name
        self.geometry = pipeline.preprocessor.geometry
        self.scale, self.offset = affine_normalization(spec.input.normalization)
        self.palette = make_palette(spec.palette, max(2, len(spec.labels or ())))
        self.decoder_config = dict(spec.decoder)

    def preprocess(self, frame: np.ndarray):
        geometry = self.geometry(frame.shape[:2])
        content_h, content_w = geometry.content_size
        resized = cv2.resize(frame, (content_w, content_h))
        if self.spec.input.color_order == "RGB":
            resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        net_h, net_w = geometry.network_size
        top, left = geometry.offset
        padded = cv2.copyMakeBorder(resized, top, net_h - content_h - top, left, net_w - content_w - left,
                                    cv2.BORDER_CONSTANT, value=self.spec.input.pad_value)
        tensor = (padded.astype(np.float32) - (-self.offset / self.scale)) * self.scale
        if self.spec.input.layout == "NCHW":
            tensor = tensor.transpose(2, 0, 1)
        return np.expand_dims(tensor, 0).astype(np.float32), geometry

    def infer(self, tensor: np.ndarray):
        return self.backend.infer({self.input_name: tensor})

    def postprocess(self, outputs, geometry, frame: np.ndarray):
        if self.spec.task == "detection":
            return self._detections(outputs, geometry)
        scores = outputs[self.decoder_config["output"]][0]
        if scores.ndim == 3 and scores.shape[0] == 1:
            scores = scores[0]
        (top, left), (content_h, content_w) = geometry.offset, geometry.content_size
        fy, fx = scores.shape[0] / geometry.network_size[0], scores.shape[1] / geometry.network_size[1]
        crop = scores[round(top * fy): round((top + content_h) * fy), round(left * fx): round((left + content_w) * fx)]
        full = cv2.resize(crop, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        if full.ndim == 2:
            labels = (full > self.decoder_config.get("threshold", 0.5)).astype(np.uint8)
        else:
            labels = np.argmax(full, axis=2).astype(np.uint8)
        return labels, self.palette[labels]

    def _detections(self, outputs, geometry):
        rows = outputs[self.decoder_config["output"]][0]
        sy, sx = geometry.scale
        threshold = self.spec.detection.score_threshold
        boxes = []
        for row in rows:
            x1, y1, x2, y2, score, cls = (float(v) for v in row)
            if score > threshold:
                boxes.append([x1 / sx, y1 / sy, x2 / sx, y2 / sy, score, int(cls)])
        boxes.sort(key=lambda b: -b[4])
        kept: list[list[float]] = []
        for box in boxes:
            suppressed = False
            for other in kept:
                if other[5] != box[5]:
                    continue
                w = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
                h = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
                inter = w * h
                union = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1]) - inter
                if union > 0 and inter / union > self.spec.detection.nms_iou:
                    suppressed = True
                    break
            if not suppressed:
                kept.append(box)
        return kept


def time_stages(stages: list[tuple[str, Callable]], repeat: int, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds of each stage of a chain ``f(previous result)``."""
    samples: dict[str, list[float]] = {name: [] for name, _ in stages}
    for iteration in range(warmup + repeat):
        value = None
        for name, stage in stages:
            start = time.perf_counter()
            value = stage(value)
            if iteration >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: median_ms(values) for name, values in samples.items()}


def pipeline_times(run: Callable, colour: Callable | None, repeat: int, warmup: int = 3) -> dict[str, float]:
    """Median stage times of ``run()`` (a pipeline's own timings), colouring the labels as part of
    the postprocess stage when ``colour`` is given."""
    samples: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}
    for iteration in range(warmup + repeat):
        result = run()
        start = time.perf_counter()
        if colour is not None:
            colour(result.labels)
        colour_s = time.perf_counter() - start
        if iteration >= warmup:
            for stage, value in result.timings.milliseconds.items():
                samples[stage].append(value / 1e3 + (colour_s if stage == "postprocess" else 0.0))
    return {stage: median_ms(values) for stage, values in samples.items()}


def bench_model(name: str, sizes: list[tuple[int, int]], repeat: int, gpu) -> list[dict]:
    spec = load_model_spec(name)
    pipeline = Pipeline.from_spec(spec)
    naive = Naive(spec, pipeline)
    palette = naive.palette
    rows = []
    for size in sizes:
        frame = camera_frame(name, size)
        geometry = pipeline.preprocessor.geometry(size)
        base = {"model": name, "resolution": size_name(size), "network": "x".join(map(str, geometry.network_size[::-1]))}
        state: dict = {}

        def naive_pre(_):
            state["tensor"], state["geometry"] = naive.preprocess(frame)

        def naive_post(outputs):
            return naive.postprocess(outputs, state["geometry"], frame)

        naive_times = time_stages([("preprocess", naive_pre), ("inference", lambda _: naive.infer(state["tensor"])),
                                   ("postprocess", naive_post)], repeat)
        if spec.task == "segmentation":
            prepare_colouring(spec.num_classes)  # as the segmentation node does when it publishes colours
        colour = (lambda labels: colorize(labels, palette)) if spec.task == "segmentation" else None
        cpu_times = pipeline_times(lambda: pipeline.run(frame, "BGR"), colour, repeat)
        rows.append({**base, "path": "naive", **naive_times})
        rows.append({**base, "path": "ours-cpu", **cpu_times})
        if gpu is not None:
            rows.append({**base, "path": "ours-gpu", **bench_gpu(spec, pipeline, frame, palette, repeat, gpu)})
    pipeline.close()
    return rows


def bench_gpu(spec: ModelSpec, pipeline: Pipeline, frame: np.ndarray, palette: np.ndarray, repeat: int, gpu) -> dict:
    """``GpuPipeline`` stage times (colour mask made on the GPU from its device labels and fetched), plus
    the device-only times of the GPU stages and their bandwidth floors."""
    from trt_perception.gpu.pipeline import GpuPipeline
    from trt_perception.gpu.visualize import GpuVisualizer

    cupy = gpu["cupy"]
    gpu_pipeline = GpuPipeline(pipeline)
    visualizer = GpuVisualizer(palette)
    colour = (lambda _: visualizer.colorize(gpu_pipeline.device_labels).get()) if spec.task == "segmentation" else None
    times = pipeline_times(lambda: gpu_pipeline.run(frame, "BGR"), colour, repeat)
    preprocessor, gpu_decoder = gpu_pipeline.preprocessor, gpu_pipeline.segmentation_decoder
    tensor, geometry = preprocessor(frame, "BGR")
    # Device-only times (CUDA events) of the GPU stages and their floors: bytes / measured bandwidth.
    device_bw, event_ms = gpu["device_bw"], gpu["event_ms"]
    device_image, step = preprocessor.upload(frame)
    times["upload_ms"] = event_ms(lambda: preprocessor.upload(frame))
    times["upload_floor_ms"] = frame.nbytes / gpu["upload_bw"] * 1e3
    times["pre_kernel_ms"] = gpu["graph_ms"](lambda: preprocessor.run_on_device(device_image, step, geometry, "BGR"))
    times["pre_kernel_floor_ms"] = (frame.nbytes + tensor.nbytes) / device_bw * 1e3
    if gpu_decoder is not None:
        host_outputs = pipeline.backend.infer({pipeline.input_name: cupy.asnumpy(tensor)})
        outputs = {name: cupy.asarray(value) for name, value in host_outputs.items()}
        scores = outputs[spec.decoder["output"]]
        labels = gpu_decoder.decode(outputs, geometry, True)
        colours = visualizer.colorize(labels)
        times["post_kernel_ms"] = gpu["graph_ms"](lambda: visualizer.colorize(gpu_decoder.decode(outputs, geometry, True, check_finite=False)))
        times["post_kernel_floor_ms"] = (scores.nbytes + labels.nbytes + colours.nbytes) / device_bw * 1e3
        times["download_ms"] = event_ms(lambda: (cupy.asnumpy(labels), cupy.asnumpy(colours)))
        times["download_floor_ms"] = (labels.nbytes + colours.nbytes) / gpu["download_bw"] * 1e3
    return times


def bench_nms(repeat: int, gpu) -> list[dict]:
    """Detection filter + NMS alone on random candidate boxes (as raw YOLO heads give thousands)."""
    from trt_perception.decoders import DetectionFilter, filter_detections
    from trt_perception.results import Detections

    rng = np.random.default_rng(0)
    detection_filter = DetectionFilter(0.3, 0.45, False, 100, None)
    rows = []
    for count in (20, 100, 1000, 8400):
        corner = rng.uniform(0, 1800, (count, 2))
        boxes = np.hstack([corner, corner + rng.uniform(10, 300, (count, 2))]).astype(np.float32)
        scores, classes = rng.uniform(0, 1, count).astype(np.float32), rng.integers(0, 80, count)
        detections = Detections(boxes, scores, classes)
        row = {"boxes": count, "cpu_ms": median_ms(_samples(lambda: filter_detections(detections, detection_filter), repeat))}
        if gpu is not None:
            from trt_perception.gpu.detection import filter_detections_gpu

            cupy = gpu["cupy"]
            device_boxes, device_scores, device_classes = (cupy.asarray(a) for a in (boxes, scores, classes))
            row["gpu_ms"] = median_ms(_samples(
                lambda: filter_detections_gpu(device_boxes, device_scores, device_classes, detection_filter), repeat))
            row["gpu_host_input_ms"] = median_ms(_samples(
                lambda: filter_detections_gpu(boxes, scores, classes, detection_filter), repeat))
        rows.append(row)
    return rows


def _samples(fn: Callable, repeat: int, warmup: int = 3) -> list[float]:
    samples = []
    for iteration in range(warmup + repeat):
        start = time.perf_counter()
        fn()
        if iteration >= warmup:
            samples.append(time.perf_counter() - start)
    return samples


def measure_gpu():
    """CuPy, device-to-device and host<->device bandwidths (bytes/s), and an event timer."""
    try:
        from trt_perception.gpu import require_cupy

        cupy = require_cupy()
    except ImportError as error:
        print(f"GPU path skipped: {error}")
        return None
    nbytes = 1 << 30
    src, dst = cupy.empty(nbytes, cupy.uint8), cupy.empty(nbytes, cupy.uint8)
    src.fill(7)

    def event_ms(fn: Callable, repeat: int = 50) -> float:
        for _ in range(3):
            fn()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        samples = []
        for _ in range(repeat):
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(cupy.cuda.get_elapsed_time(start, end))
        return statistics.median(samples)

    def graph_ms(fn: Callable, replays: int = 200) -> float:
        """Device time of the kernels ``fn`` enqueues, from replays of a captured CUDA graph (no
        Python launch overhead); falls back to event timing when capture is refused."""
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            for _ in range(3):
                fn()
            stream.synchronize()
            try:
                stream.begin_capture()
                fn()
                graph = stream.end_capture()
            except Exception as error:  # noqa: BLE001  (any capture failure: report and time without a graph)
                print(f"CUDA graph capture failed ({error}); timing with events")
                return event_ms(fn)
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            graph.launch(stream)
            start.record(stream)
            for _ in range(replays):
                graph.launch(stream)
            end.record(stream)
            end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / replays

    copy_ms = event_ms(lambda: dst.__setitem__(Ellipsis, src), 20)
    # Link bandwidth (the floor of any copy) with page-locked host memory; frames themselves are
    # copied from ordinary (pageable) memory, as a message buffer is.
    import cupyx

    host = cupyx.empty_pinned(256 << 20, np.uint8)
    host.fill(3)
    device = cupy.empty(host.size, cupy.uint8)
    up_ms = event_ms(lambda: device.set(host), 10)
    down_ms = event_ms(lambda: device.get(out=host), 10)
    return {
        "cupy": cupy,
        "event_ms": event_ms,
        "graph_ms": graph_ms,
        "device_bw": 2 * nbytes / (copy_ms / 1e3),
        "upload_bw": host.size / (up_ms / 1e3),
        "download_bw": host.size / (down_ms / 1e3),
        "name": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
    }


def markdown(rows: list[dict], gpu_info: dict | None, repeat: int, nms_rows: list[dict]) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
        + (f", GPU {gpu_info['name']}" if gpu_info else ", no GPU") + f"); OpenCV {cv2.__version__}; "
        f"median of {repeat} frames; `{command_line()}`.",
        "",
    ]
    if gpu_info:
        lines += [f"Bandwidth measured here: device copy {gpu_info['device_bw'] / 1e9:.0f} GB/s (read + write), "
                  f"host->device {gpu_info['upload_bw'] / 1e9:.1f} GB/s, device->host {gpu_info['download_bw'] / 1e9:.1f} GB/s "
                  "(page-locked host memory, 256 MiB copies).", ""]
    lines += ["| model | frame | network | path | preprocess ms | inference ms | postprocess ms | total ms | pre ratio | post ratio | total ratio |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    naive = {(r["model"], r["resolution"]): r for r in rows if r["path"] == "naive"}
    for row in rows:
        base = naive[(row["model"], row["resolution"])]
        total = row["preprocess"] + row["inference"] + row["postprocess"]
        base_total = base["preprocess"] + base["inference"] + base["postprocess"]
        ratio = "" if row["path"] == "naive" else f" {row['preprocess'] / base['preprocess']:.2f} | {row['postprocess'] / base['postprocess']:.2f} | {total / base_total:.2f} |"
        lines.append(f"| {row['model']} | {row['resolution']} | {row['network']} | {row['path']} | {row['preprocess']:.2f} | "
                     f"{row['inference']:.2f} | {row['postprocess']:.2f} | {total:.2f} |" + (ratio or " | | |"))
    gpu_rows = [r for r in rows if r["path"] == "ours-gpu"]
    if gpu_rows:
        lines += ["", "GPU stages alone against their physical floor (copies: CUDA events, median; kernels: replays of a "
                  "captured CUDA graph, so no Python launch overhead; floor = bytes that "
                  "must move / bandwidth measured above: kernels read the frame (or scores) once and write the tensor "
                  "(or labels + RGB colours) once; copies move the frame up, labels + colours down):", "",
                  "| model | frame | upload ms | floor | preprocess kernel ms | floor | post kernels ms | floor | download ms | floor |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        nan = float("nan")
        for row in gpu_rows:
            cells = [row.get(key, nan) for key in ("upload_ms", "upload_floor_ms", "pre_kernel_ms", "pre_kernel_floor_ms",
                                                   "post_kernel_ms", "post_kernel_floor_ms", "download_ms", "download_floor_ms")]
            lines.append(f"| {row['model']} | {row['resolution']} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines += ["", "Detection filter + per-class NMS alone (score 0.3, IoU 0.45, top 100; random boxes, 80 classes; "
              "result on the host" + ("; GPU with the boxes already on the device, and uploaded from the host first):"
                                      if gpu_info else "):"), ""]
    if gpu_info:
        lines += ["| candidate boxes | CPU ms | GPU ms | GPU ms, host input |", "|---|---|---|---|"]
        lines += [f"| {row['boxes']} | {row['cpu_ms']:.2f} | {row['gpu_ms']:.2f} | {row['gpu_host_input_ms']:.2f} |" for row in nms_rows]
    else:
        lines += ["| candidate boxes | CPU ms |", "|---|---|"]
        lines += [f"| {row['boxes']} | {row['cpu_ms']:.2f} |" for row in nms_rows]
    return "\n".join(lines) + "\n"


def pipeline_part(args: argparse.Namespace) -> None:
    """Ours vs naive per stage (CPU path, and the GPU path when CuPy sees a GPU)."""
    gpu = measure_gpu()
    rows = []
    for model in args.models:
        start = time.perf_counter()
        rows += bench_model(model, args.sizes, args.repeat, gpu)
        print(f"{model}: {time.perf_counter() - start:.1f} s", flush=True)
    nms_rows = bench_nms(args.repeat, gpu)
    text = markdown(rows, gpu, args.repeat, nms_rows)
    (args.out / "bench.json").write_text(json.dumps({"pipelines": rows, "nms": nms_rows}, indent=1))
    (args.out / "bench.md").write_text(text)
    if not args.no_doc:
        update_section("run_bench" + ("-gpu" if gpu else "-cpu"), text)
    print(text, flush=True)


def node_part(args: argparse.Namespace, command: str | None = None) -> list[dict] | None:
    """Node end to end over DDS against a relay hop: its rows, or None (reason printed) when rclpy is not
    importable. ``command``: how the benchmark was started, for the report (default: this script's
    command line)."""
    try:
        import rclpy  # noqa: F401  (only to know whether ROS 2 is there)
    except ImportError as error:
        print(f"Node end-to-end part skipped: rclpy is not importable ({error}). It needs the ROS 2 wheels of "
              "the repo's .venv: `source scripts/ros_env.sh` (scripts/setup_env.sh builds it).", flush=True)
        return None
    from bench import bench_transport_e2e as transport

    folder = Path(tempfile.mkdtemp(prefix="run_bench_node_"))
    env = transport.shipped_profile_env(transport.private_ros_env(folder))
    start = time.perf_counter()
    rows = transport.measure_e2e(env, folder, args.sizes, args.node_rate_hz, args.node_seconds)
    print(f"node end to end: {time.perf_counter() - start:.1f} s; node logs in {folder}", flush=True)
    text = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {transport.machine()}; `{command or command_line()}`: "
        f"camera frames (rgb8 `Image`, or jpeg q90 `CompressedImage`) published best-effort at {args.node_rate_hz:g} Hz, "
        f"per size 1 s of warm-up, then {args.node_seconds:g} s measured in {transport.ROUNDS} windows per variant, "
        "the relay and the node variants taking turns (all running, each on its own topics); the shipped Fast DDS profile "
        "(`config/dds/fastdds_large_images.xml`) in every process; `segmentation_node` with `selfie_segmentation` "
        "on ONNX Runtime (CPU), labels published reliable.\n\n" + transport.e2e_table(rows) + "\n"
    )
    (args.out / "node_e2e.json").write_text(json.dumps(rows, indent=1))
    (args.out / "node_e2e.md").write_text(text)
    if not args.no_doc:
        update_section("run_bench-node", text)
    print(text, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "pipeline", "node"), default="all",
                        help="all (default): pipeline then node; node is skipped, with the reason, where rclpy is missing")
    parser.add_argument("--repeat", type=int, default=30, help="pipeline: frames measured per row")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=RESOLUTIONS, metavar="WxH", help="frame sizes (both parts)")
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="pipeline: models")
    parser.add_argument("--node-seconds", type=float, default=NODE_SECONDS, help="node: measured seconds per size")
    parser.add_argument("--node-rate-hz", type=float, default=NODE_RATE_HZ, help="node: camera frame rate")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "trt_perception_bench")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/performance.md alone")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.part in ("all", "pipeline"):
        pipeline_part(args)
    node_ran = node_part(args) is not None if args.part in ("all", "node") else True
    print(f"run_bench done in {time.perf_counter() - start:.0f} s", flush=True)
    return 0 if node_ran or args.part == "all" else 1


if __name__ == "__main__":
    raise SystemExit(main())
