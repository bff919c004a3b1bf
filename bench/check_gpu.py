"""Check the GPU path against the CPU reference on a CUDA machine; writes a JSON and a markdown report.

    python bench/check_gpu.py [--out DIR] [--seed N]

Preprocessing: every encoding (rgb8/bgr8/rgba8/bgra8/mono8, padded rows), layout, dtype,
normalization, stretch/letterbox and interpolation, on the sample images and random images,
compared with ``preprocess.Preprocessor`` (max abs difference; goal <= 1e-3, for float16 tensors
plus one float16 step, see ``allowed_difference``). Segmentation: random
and real model score maps through every GPU decoder mode vs the CPU decoders (labels must be
identical, bilinear upsampling before the decision included: the kernels compute OpenCV's own x86
float arithmetic, which the CPU decoders run; on aarch64 OpenCV's NEON resize fuses the multiply-add
of its vertical pass, so a label there may differ where the upsampled score lies within about one
float32 step of the cut, which this check would report: not verified, no ARM machine). Detection: random boxes through NMS vs
``filter_detections``. Visualization: colour masks and overlays vs ``visualize``. Outputs are
poisoned before every GPU run, so unwritten elements show up as differences.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trt_perception.decoders import DetectionFilter, SegmentationDecoder, create_decoder, filter_detections  # noqa: E402
from trt_perception.geometry import ResizeGeometry  # noqa: E402
from trt_perception.gpu import require_cupy  # noqa: E402
from trt_perception.gpu.detection import filter_detections_gpu  # noqa: E402
from trt_perception.gpu.preprocess import GpuPreprocessor  # noqa: E402
from trt_perception.gpu.segmentation import GpuSegmentationDecoder  # noqa: E402
from trt_perception.gpu.visualize import GpuVisualizer  # noqa: E402
from trt_perception.preprocess import Preprocessor  # noqa: E402
from trt_perception.spec import DynamicSize, InputSpec, NormalizationSpec, load_model_spec  # noqa: E402
from trt_perception.visualize import colorize, default_palette, overlay  # noqa: E402

IMAGES = ROOT / "test" / "fixtures" / "images"
TOLERANCE = 1e-3

NORMALIZATIONS = [
    NormalizationSpec("none"),
    NormalizationSpec("unit"),
    NormalizationSpec("symmetric"),
    NormalizationSpec("mean_std", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "unit"),
    NormalizationSpec("mean_std", (123.7, 116.3, 103.5), (58.4, 57.1, 57.4), "byte"),
    NormalizationSpec("per_image_standardization"),
]


def as_encoding(rgb: np.ndarray, order: str, row_padding: int) -> np.ndarray:
    """The RGB image in another channel order, as a view with ``row_padding`` extra bytes per row."""
    converted = {
        "RGB": rgb,
        "BGR": rgb[:, :, ::-1],
        "RGBA": np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]),
        "BGRA": np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 77, np.uint8)]),
        "MONO": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None],
    }[order]
    height, width, channels = converted.shape
    buffer = np.full((height, width * channels + row_padding), 0xAB, np.uint8)
    buffer[:, : width * channels] = converted.reshape(height, -1)
    view = buffer[:, : width * channels].reshape(height, width, channels)
    return view[:, :, 0] if order == "MONO" else view


def poison(array) -> None:
    """Fill a device array with values no kernel would write (NaN for floats)."""
    array.fill(np.nan if array.dtype.kind == "f" else 0xAB)


def allowed_difference(expected: np.ndarray) -> np.ndarray:
    """TOLERANCE per element, plus one float16 step of the expected value for float16 tensors: per-image
    standardization sums the image in another order on the GPU, so a value that lands next to a
    float16 rounding boundary may round to the neighbouring float16 (0.00195 apart from 2 to 4)."""
    if expected.dtype != np.float16:
        return np.full(expected.shape, TOLERANCE)
    return TOLERANCE + np.spacing(np.abs(expected)).astype(np.float64)


def read_rgb(path: Path) -> np.ndarray:
    """A fixture photo as RGB (raises if OpenCV cannot read it)."""
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise FileNotFoundError(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def segmentation_decoder(config: dict[str, Any], num_classes: int | None) -> SegmentationDecoder:
    """The CPU decoder of a segmentation ``decoder`` config (the reference of the GPU one)."""
    decoder = create_decoder("segmentation", config, num_classes)
    assert isinstance(decoder, SegmentationDecoder)
    return decoder


def check_preprocess(rng: np.random.Generator, cupy) -> list[dict]:
    sources = [read_rgb(path) for path in sorted(IMAGES.glob("*.png")) + sorted(IMAGES.glob("*.jpg"))]
    sources += [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(480, 640), (1080, 1920), (37, 101), (300, 7)]]
    sizes: list[tuple[int, int] | DynamicSize] = [(256, 256), (512, 384), DynamicSize(736, 32, 2048), (64, 48)]
    rows = []
    combos = list(itertools.product(["NCHW", "NHWC"], ["float32", "float16"], NORMALIZATIONS,
                                    ["fixed_shape", "keep_aspect_ratio"], ["linear", "nearest"]))
    combos += [("NCHW", "uint8", NormalizationSpec("none"), resize, "linear") for resize in ("fixed_shape", "keep_aspect_ratio")]
    combos += [("NHWC", "uint8", NormalizationSpec("none"), "keep_aspect_ratio", "linear")]
    for index, (layout, dtype, normalization, resize, interpolation) in enumerate(combos):
        spec = InputSpec(
            size=sizes[index % len(sizes)], layout=layout, dtype=dtype, color_order=("RGB", "BGR")[index % 2],
            resize=resize, pad_value=(114.0, 20.0, 255.0), pad_placement=("centered", "top_left")[index // 2 % 2],
            interpolation=interpolation, normalization=normalization,
        )
        cpu, gpu = Preprocessor(spec), GpuPreprocessor(spec)
        worst, worst_case, failed = 0.0, "", False
        for image_index, rgb in enumerate(sources):
            order = ("RGB", "BGR", "RGBA", "BGRA", "MONO")[(index + image_index) % 5]
            pixels = as_encoding(rgb, order, row_padding=(index + image_index) % 3 * 5)
            expected, geometry = cpu(pixels, order)
            shape = gpu.input_shape(geometry.network_size)
            out = cupy.empty(shape, dtype)
            poison(out)
            actual, gpu_geometry = gpu(pixels, order, out=out)
            assert gpu_geometry == geometry, (gpu_geometry, geometry)
            got = cupy.asnumpy(actual).astype(np.float64)
            difference = np.abs(got - expected.astype(np.float64))
            diff = float(np.max(difference)) if np.isfinite(got).all() else float("inf")
            if not np.isfinite(got).all() or np.any(difference > allowed_difference(expected)):
                failed = True
            if diff > worst:
                worst, worst_case = diff, f"{order} {pixels.shape[:2]}->{geometry.network_size}"
        rows.append({
            "layout": layout, "dtype": dtype, "normalization": normalization.type + ("" if normalization.type != "mean_std" else f"/{normalization.range}"),
            "resize": resize, "interpolation": interpolation, "images": len(sources), "max_abs_diff": worst,
            "worst_case": worst_case, "ok": not failed,
        })
    return rows


def random_geometries(rng: np.random.Generator) -> list[ResizeGeometry]:
    return [
        ResizeGeometry.stretch((480, 640), (256, 256)),
        ResizeGeometry.letterbox((1080, 1920), (512, 512), "centered"),
        ResizeGeometry.letterbox((720, 1280), (736, 1312), "top_left"),
        ResizeGeometry.stretch((1080, 1920), (512, 1024)),
        ResizeGeometry.stretch((240, 318), (480, 636)),  # maps twice the source's size: OpenCV's area shortcut
    ]


def check_segmentation(rng: np.random.Generator, cupy) -> list[dict]:
    rows = []
    cases: list[tuple[dict[str, Any], int]] = []
    for channels, layout, upsample in itertools.product([2, 3, 19, 150, 300], ["NCHW", "NHWC"], ["after_argmax", "before_argmax"]):
        if channels == 300 and upsample == "before_argmax" and layout == "NCHW":
            continue
        cases.append(({"type": "logits", "layout": layout, "upsample": upsample}, channels))
    for activation, upsample in itertools.product(["none", "sigmoid"], ["after_threshold", "before_threshold"]):
        cases.append(({"type": "binary", "threshold": 0.3, "activation": activation, "upsample": upsample}, 1))
    cases.append(({"type": "labels"}, 19))
    for config, channels in cases:
        decoder = segmentation_decoder(config, channels if config["type"] != "binary" else None)
        gpu_decoder = GpuSegmentationDecoder(decoder)
        mismatched, total = 0, 0
        for geometry in random_geometries(rng):
            for factor in (1, 4):
                height, width = geometry.network_size[0] // factor, geometry.network_size[1] // factor
                tensor: np.ndarray
                if config["type"] == "labels":
                    tensor = rng.integers(0, channels, (1, height, width), dtype=np.int64)
                elif config["type"] == "binary":
                    tensor = rng.standard_normal((1, 1, height, width)).astype(np.float32)
                    if config["activation"] == "none":
                        tensor = 1 / (1 + np.exp(-tensor))
                else:
                    shape = (1, channels, height, width) if config["layout"] == "NCHW" else (1, height, width, channels)
                    tensor = rng.standard_normal(shape).astype(np.float32)
                for at_source in (True, False):
                    expected = decoder.decode({"out": tensor}, geometry, at_source)
                    actual = cupy.asnumpy(gpu_decoder.decode({"out": cupy.asarray(tensor)}, geometry, at_source))
                    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (actual.dtype, actual.shape, expected.shape)
                    mismatched += int(np.count_nonzero(actual != expected))
                    total += expected.size
        rows.append({"decoder": json.dumps(config), "classes": channels, "pixels": total, "mismatches": mismatched,
                     "ok": mismatched == 0})
    return rows


def check_real_models(cupy) -> list[dict]:
    """Real score maps (ONNX Runtime on the CPU) of the bundled segmentation models."""
    from trt_perception.backends import create_backend

    rows = []
    for name in ("selfie_segmentation", "ppocrv4_det"):
        spec = load_model_spec(name)
        backend = create_backend(spec, "onnxruntime")
        preprocessor = Preprocessor(spec.input)
        for upsample in ("after_threshold", "before_threshold"):
            config = dict(spec.decoder, upsample=upsample)
            decoder = segmentation_decoder(config, spec.num_classes)
            gpu_decoder = GpuSegmentationDecoder(decoder)
            mismatched = total = 0
            for path in sorted(IMAGES.glob("*.png")) + sorted(IMAGES.glob("*.jpg")):
                rgb = read_rgb(path)
                tensor, geometry = preprocessor(rgb, "RGB")
                outputs = backend.infer({backend.inputs[0].name: tensor})
                expected = decoder.decode(outputs, geometry, True)
                actual = cupy.asnumpy(gpu_decoder.decode({k: cupy.asarray(v) for k, v in outputs.items()}, geometry, True))
                mismatched += int((actual != expected).sum())
                total += expected.size
            rows.append({"model": name, "upsample": upsample, "pixels": total, "mismatches": mismatched,
                         "ok": mismatched == 0})
        backend.close()
    return rows


def check_detection(rng: np.random.Generator) -> list[dict]:
    rows = []
    for count, agnostic, iou, allowed in itertools.product([0, 7, 100, 3000], [False, True], [0.45, None], [None, frozenset({1, 2})]):
        detection_filter = DetectionFilter(0.3, iou, agnostic, 50, allowed)
        same = 0
        trials = 5
        for _ in range(trials):
            corner = rng.uniform(0, 600, (count, 2))
            boxes = np.hstack([corner, corner + rng.uniform(5, 150, (count, 2))]).astype(np.float32)
            scores = np.round(rng.uniform(0, 1, count), 2).astype(np.float32)  # ties on purpose
            classes = rng.integers(0, 4, count)
            from trt_perception.results import Detections

            expected = filter_detections(Detections(boxes, scores, classes), detection_filter)
            actual = filter_detections_gpu(boxes, scores, classes, detection_filter)
            same += int(
                np.array_equal(expected.boxes, actual.boxes) and np.array_equal(expected.scores, actual.scores)
                and np.array_equal(expected.class_ids, actual.class_ids)
            )
        rows.append({"boxes": count, "class_agnostic": agnostic, "nms_iou": iou, "classes": sorted(allowed) if allowed else None,
                     "identical_runs": f"{same}/{trials}", "ok": same == trials})
    return rows


def check_visualize(rng: np.random.Generator, cupy) -> list[dict]:
    rows = []
    for classes, alpha, order in [(2, 0.5, "RGB"), (19, 0.3, "BGR"), (300, 0.7, "BGRA"), (5, 0.45, "MONO")]:
        dtype: type[np.unsignedinteger] = np.uint8 if classes <= 256 else np.uint16
        labels = rng.integers(0, classes + 3, (480, 640)).astype(dtype)  # some beyond the palette
        palette = default_palette(classes)
        rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        pixels = as_encoding(rgb, order, 3)
        visualizer = GpuVisualizer(palette)
        gpu_preprocessor = GpuPreprocessor(InputSpec(size=(8, 8)))
        image, step = gpu_preprocessor.upload(pixels)
        from trt_perception.visualize import as_rgb

        colours = colorize(labels, palette)
        mask_ok = np.array_equal(cupy.asnumpy(visualizer.colorize(cupy.asarray(labels))), colours)
        expected = overlay(as_rgb(pixels, order), colours, alpha)
        actual = cupy.asnumpy(visualizer.overlay(cupy.asarray(labels), image, step, order, alpha))
        rows.append({"classes": classes, "alpha": alpha, "encoding": order, "colour_mask_identical": mask_ok,
                     "overlay_max_abs_diff": int(np.max(np.abs(actual.astype(int) - expected))), "ok": mask_ok and np.array_equal(actual, expected)})
    return rows


def summarize_preprocess(rows: list[dict]) -> list[dict]:
    """One row per dtype and normalization (max over layouts, resize modes, interpolations, images)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dtype"], row["normalization"]), []).append(row)
    return [
        {"dtype": dtype, "normalization": normalization, "configurations": len(group),
         "images x encodings": sum(r["images"] for r in group), "max_abs_diff": max(r["max_abs_diff"] for r in group),
         "ok": all(r["ok"] for r in group)}
        for (dtype, normalization), group in groups.items()
    ]


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(none)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "trt_perception_check_gpu")
    parser.add_argument("--update-doc", action="store_true", help="write the report into docs/performance.md")
    parser.add_argument("--seed", type=int, help="seed of the random inputs (default: the current time; the report names it)")
    args = parser.parse_args()
    cupy = require_cupy()
    seed = int(time.time()) if args.seed is None else args.seed  # fresh inputs every run unless repeating one
    rng = np.random.default_rng(seed)
    args.out.mkdir(parents=True, exist_ok=True)
    sections = {}
    for title, run in [
        ("Preprocessing (max abs difference after normalization; each configuration: NCHW/NHWC x stretch/letterbox x linear/nearest, every image in a rotating encoding with padded rows)", lambda: check_preprocess(rng, cupy)),
        ("Segmentation decoders, random scores", lambda: check_segmentation(rng, cupy)),
        ("Segmentation decoders, real models (ONNX Runtime outputs on the sample images)", lambda: check_real_models(cupy)),
        ("Detection filter and NMS", lambda: check_detection(rng)),
        ("Colour masks and overlays", lambda: check_visualize(rng, cupy)),
    ]:
        start = time.perf_counter()
        sections[title] = run()
        print(f"{title}: {time.perf_counter() - start:.1f} s", flush=True)
        print(markdown_table(sections[title]), flush=True)
    (args.out / "check_gpu.json").write_text(json.dumps(sections, indent=1))
    device = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    failed = [title for title, rows in sections.items() if any(not row.get("ok", True) for row in rows)]
    report = [f"`python bench/check_gpu.py`: GPU {device}, CuPy {cupy.__version__}, OpenCV {cv2.__version__}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; random inputs drawn fresh per run (seed {seed}); result: "
              + ("all checks passed" if not failed else "FAILED: " + "; ".join(failed)) + "\n"]
    for title, rows in sections.items():
        shown = summarize_preprocess(rows) if title.startswith("Preprocessing") else rows
        report.append(f"#### {title}\n\n{markdown_table(shown)}")
    (args.out / "check_gpu.md").write_text("\n".join(report))
    if args.update_doc:
        from bench.report import update_section

        update_section("gpu-check", "\n".join(report))
    print("FAILED: " + "; ".join(failed) if failed else "ALL CHECKS PASSED")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
