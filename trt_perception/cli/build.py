"""Build TensorRT engines from model specs' ONNX models (into the engine cache, or one --output file).

Without ``--output`` the engine goes where nodes look for it (the engine cache, see
``tensorrt/engine_cache.py``) and is rebuilt only when stale. Each engine is then loaded and run once on
zeros at the profile's opt shape, unless ``--build-only`` (provisioning) skips that check.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from trt_perception.errors import SpecError
from trt_perception.spec import ModelSpec, load_model_spec
from trt_perception.tensorrt.engine_builder import PRECISIONS, BuildOptions, EngineBuildError, ShapeRange
from trt_perception.tensorrt.engine_cache import CACHE_DIR_ENV, EngineCache, build_engine_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``build``."""
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="model spec files or bundled spec names")
    parser.add_argument("--onnx", type=Path, help="ONNX model to build from instead of the spec's model (one spec)")
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        help="write the engine (and <output>.json) here instead of the engine cache (one spec)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help=f"engine cache folder (default: ${CACHE_DIR_ENV} or ~/.cache/trt_perception/engines)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp16/int8 set TensorRT <= 10 builder flags; TensorRT 11 builds strongly typed "
        "networks whose precision comes from the ONNX (FP16 via ModelOpt AutoCast, INT8 via "
        "explicit Q/DQ nodes), so only fp32 (= as typed in the ONNX) applies there",
    )
    parser.add_argument("--workspace-mib", type=int, help="builder workspace limit in MiB (default: TensorRT's)")
    for bound in ("min", "opt", "max"):
        parser.add_argument(
            f"--{bound}-shape",
            action="append",
            default=[],
            metavar="NAME:DxDxD",
            help=f"{bound} shape of a dynamic input, e.g. x:1x3x736x992 (default: from the spec's input.size)",
        )
    parser.add_argument("--dla-core", type=int, help="build for this DLA core (Jetson), GPU fallback on")
    parser.add_argument("--timing-cache", type=Path, help="timing cache file to read and update (faster rebuilds)")
    parser.add_argument("--calib-images", type=Path, help="int8 (TensorRT <= 10): folder of calibration images")
    parser.add_argument("--calib-cache", type=Path, help="int8: calibration cache to read, or write after calibrating")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached engine is current")
    parser.add_argument(
        "--build-only", action="store_true", help="only build (provisioning): do not load and run the engine afterwards"
    )


def parse_shape_ranges(args: argparse.Namespace) -> dict[str, ShapeRange]:
    """``--min/opt/max-shape NAME:DxD..`` as one range per input name; all three are required."""
    bounds: dict[str, dict[str, tuple[int, ...]]] = {}
    for bound in ("min", "opt", "max"):
        for text in getattr(args, f"{bound}_shape"):
            name, separator, dims = text.rpartition(":")
            try:
                shape = tuple(int(dim) for dim in dims.lower().split("x"))
            except ValueError:
                shape = ()
            if not separator or not name or not shape:
                raise EngineBuildError(f"--{bound}-shape {text!r}: expected NAME:DxDx..., e.g. x:1x3x640x640")
            bounds.setdefault(name, {})[bound] = shape
    ranges = {}
    for name, given in bounds.items():
        missing = [bound for bound in ("min", "opt", "max") if bound not in given]
        if missing:
            raise EngineBuildError(f"input {name!r}: --{missing[0]}-shape missing (give min, opt and max)")
        ranges[name] = ShapeRange(given["min"], given["opt"], given["max"])
    return ranges


def _options(args: argparse.Namespace) -> BuildOptions:
    return BuildOptions(
        precision=args.precision,
        workspace_mib=args.workspace_mib,
        shapes=parse_shape_ranges(args),
        dla_core=args.dla_core,
        timing_cache=args.timing_cache,
        calib_images=args.calib_images,
        calib_cache=args.calib_cache,
    )


def _onnx_path(spec: ModelSpec, override: Path | None) -> Path:
    onnx_path = override or spec.model
    if onnx_path is None:
        raise SpecError(f"{spec.source or spec.name}: model: the spec names no ONNX model to build from (use --onnx)")
    return onnx_path


def check_engine(engine_path: Path) -> str:
    """Load the engine and run it once on zeros at each input's opt shape; a one-line report."""
    from trt_perception.tensorrt.backend import TensorRTBackend

    backend = TensorRTBackend(engine_path)
    try:
        feeds = {info.name: np.zeros(backend.input_profile(info.name)[1], info.dtype) for info in backend.inputs}
        started = time.perf_counter()
        outputs = backend.infer(feeds)
        milliseconds = (time.perf_counter() - started) * 1e3
    finally:
        backend.close()
    shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in outputs.items())
    return f"loads and runs ({milliseconds:.1f} ms at opt shape): {shapes}"


def run(args: argparse.Namespace) -> int:
    """Run ``build``; 0 when every engine was built (and checked)."""
    if (args.output or args.onnx) and len(args.specs) != 1:
        raise SpecError("--output and --onnx apply to exactly one spec")
    options = _options(args)
    for name in args.specs:
        spec = load_model_spec(name)
        onnx_path = _onnx_path(spec, args.onnx)
        if args.output is not None:
            build_engine_file(args.output, onnx_path, options, spec.input)
            engine_path = args.output
        else:
            engine_path = EngineCache(args.cache_dir).build(onnx_path, options, spec.input, force=args.force)
        print(f"{spec.name}: engine {engine_path}")
        if not args.build_only:
            print(f"{spec.name}: {check_engine(engine_path)}")
    return 0
