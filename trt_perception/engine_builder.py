"""Build a TensorRT engine from an ONNX model (TensorRT 8.5 to 11).

Precision: with TensorRT 10 and older, ``fp16`` / ``int8`` set builder flags (INT8 calibrated with
an entropy calibrator fed by images through the model spec's own preprocessing). TensorRT 11 only
builds strongly typed networks: precision then comes from the ONNX model itself (see
``STRONG_TYPING_HELP``). Dynamic inputs get one optimization profile, by default derived from the
spec's input size rule. Differences between TensorRT versions are confined to the functions marked
"version branch".
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from trt_perception.backends.tensorrt import (
    TensorRTMessages,
    import_cupy,
    load_standard_plugins,
    make_logger,
    require_tensorrt,
    shape_of,
)
from trt_perception.errors import ModelLoadError

if TYPE_CHECKING:
    import tensorrt as trt

    from trt_perception.spec import InputSpec

LOG = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_LONG_SIDE_FACTOR = 4  # dynamic sizes without max_long_side: long side up to 4x the short side
OPT_SOURCE_SIZE = (480, 640)  # dynamic sizes are tuned for a VGA camera frame unless --opt-shape says otherwise

Shape = tuple[int, ...]

STRONG_TYPING_HELP = (
    "TensorRT {version} builds strongly typed networks only: every layer runs in the data type the "
    "ONNX model gives it, and the FP16/INT8 builder flags and INT8 calibrators no longer exist. Build "
    "with --precision fp32 (meaning: as typed in the ONNX) from a model converted to FP16 (e.g. with "
    "NVIDIA ModelOpt AutoCast) or, for INT8, quantized with explicit QuantizeLinear/DequantizeLinear "
    "(Q/DQ) nodes (e.g. ModelOpt quantization); --calib-images cannot be used."
)


class EngineBuildError(ModelLoadError):
    """An engine could not be built; the message names the option, node or TensorRT's reason."""


@dataclass(frozen=True)
class ShapeRange:
    """Min, opt and max shape of one input in the optimization profile."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        if not len(self.min) == len(self.opt) == len(self.max):
            raise EngineBuildError(f"shape range {self}: min, opt and max differ in rank")
        if not all(low <= opt <= high for low, opt, high in zip(self.min, self.opt, self.max)):
            raise EngineBuildError(f"shape range {self}: need min <= opt <= max in every dimension")
        if any(dim < 1 for dim in self.min):
            raise EngineBuildError(f"shape range {self}: dimensions must be positive")

    def as_lists(self) -> list[list[int]]:
        return [list(self.min), list(self.opt), list(self.max)]


@dataclass(frozen=True)
class BuildOptions:
    """Everything that decides how an engine is built (``shapes``: explicit per-input ranges)."""

    precision: str = "fp32"
    workspace_mib: int | None = None
    shapes: Mapping[str, ShapeRange] = field(default_factory=dict)
    dla_core: int | None = None
    timing_cache: Path | None = None
    calib_images: Path | None = None
    calib_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineBuildError(f"--precision {self.precision}: expected one of {', '.join(PRECISIONS)}")
        if self.dla_core is not None and self.precision == "fp32":
            raise EngineBuildError("--dla-core: DLA runs FP16 or INT8 only; use --precision fp16 or int8")
        if self.precision == "int8" and self.calib_images is None and self.calib_cache is None:
            raise EngineBuildError("--precision int8 needs --calib-images DIR (or an existing --calib-cache)")


# --------------------------------------------------------------------------- profile defaults


def _round_up(value: float, multiple: int) -> int:
    return max(multiple, math.ceil(value / multiple) * multiple)


def _spatial_axes(layout: str) -> tuple[int, int]:
    return (2, 3) if layout == "NCHW" else (1, 2)


def spatial_range(input_spec: InputSpec) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Min, opt and max ``(height, width)`` the spec's size rule can produce.

    A fixed size gives that size three times. A dynamic size gives min one ``multiple_of`` per side
    (very elongated images), opt the size of a 640x480 camera frame (``OPT_SOURCE_SIZE``), and max
    the long-side cap (rounded up to the multiple) per side; without ``max_long_side`` the long
    side is assumed to stay within ``DEFAULT_LONG_SIDE_FACTOR`` times the short side.
    """
    from trt_perception.preprocess import dynamic_network_size
    from trt_perception.spec import DynamicSize

    size = input_spec.size
    if not isinstance(size, DynamicSize):
        return size, size, size
    multiple = size.multiple_of
    longest = _round_up(size.max_long_side or DEFAULT_LONG_SIDE_FACTOR * size.short_side, multiple)
    opt = dynamic_network_size(OPT_SOURCE_SIZE, size, input_spec.resize == "keep_aspect_ratio")
    return (multiple, multiple), opt, (longest, longest)


def image_input_range(input_spec: InputSpec, model_shape: Sequence[int]) -> ShapeRange:
    """Shape range of the spec's image input: batch 1, channels from the model, sides from the spec."""
    if len(model_shape) != 4:
        raise EngineBuildError(
            f"input {input_spec.name!r} has rank {len(model_shape)}; only 4-D image inputs get a default "
            "profile: give --min-shape/--opt-shape/--max-shape"
        )
    channel_axis = 1 if input_spec.layout == "NCHW" else 3
    channels = model_shape[channel_axis]
    if channels < 0:
        raise EngineBuildError(
            f"input {input_spec.name!r}: the channel dimension is dynamic; give --min-shape/--opt-shape/--max-shape"
        )
    height_axis, width_axis = _spatial_axes(input_spec.layout)
    shapes = []
    for height, width in spatial_range(input_spec):
        shape = [1, 0, 0, 0]
        shape[channel_axis], shape[height_axis], shape[width_axis] = channels, height, width
        shapes.append(tuple(shape))
    for axis, dim in enumerate(model_shape):
        if dim >= 0 and any(shape[axis] != dim for shape in shapes):
            raise EngineBuildError(
                f"input {input_spec.name!r}: the model fixes dimension {axis} to {dim}, but the spec's "
                f"input.size gives {shapes[1][axis]}"
            )
    return ShapeRange(*shapes)


def resolve_shape_ranges(
    network_inputs: Mapping[str, Shape], options: BuildOptions, input_spec: InputSpec | None
) -> dict[str, ShapeRange]:
    """Shape ranges for every dynamic network input: explicit ones first, else from the spec."""
    unknown = sorted(set(options.shapes) - set(network_inputs))
    if unknown:
        raise EngineBuildError(f"shape given for {unknown[0]!r}, but the model's inputs are {sorted(network_inputs)}")
    image_input = None
    if input_spec is not None:
        image_input = input_spec.name or (next(iter(network_inputs)) if len(network_inputs) == 1 else None)
    ranges = {}
    for name, shape in network_inputs.items():
        if name in options.shapes:
            chosen = options.shapes[name]
            if len(chosen.min) != len(shape) or any(
                dim >= 0 and not (chosen.min[axis] == chosen.max[axis] == dim) for axis, dim in enumerate(shape)
            ):
                raise EngineBuildError(f"--shape for {name!r}: {chosen} does not fit the model's shape {shape}")
            ranges[name] = chosen
        elif any(dim < 0 for dim in shape):
            if name != image_input or input_spec is None:
                raise EngineBuildError(
                    f"input {name!r} has dynamic shape {shape}: give its range with "
                    f"--min-shape/--opt-shape/--max-shape {name}:..."
                )
            ranges[name] = image_input_range(dataclasses.replace(input_spec, name=name), shape)
    return ranges


# --------------------------------------------------------------------------- version branches


def network_flags(trt_version: tuple[int, int]) -> int:
    """``create_network`` flags (version branch): 8.x needs EXPLICIT_BATCH for the ONNX parser;
    10.x ignores it (always explicit batch); 11.x networks are always strongly typed."""
    import tensorrt as trt

    if trt_version < (10, 0):
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def apply_precision(config: trt.IBuilderConfig, precision: str, trt_version: tuple[int, int]) -> None:
    """Enable reduced precision (version branch): builder flags up to 10.x, impossible in 11.x."""
    import tensorrt as trt

    if trt_version >= (11, 0):
        if precision != "fp32":
            raise EngineBuildError(f"--precision {precision}: " + STRONG_TYPING_HELP.format(version=trt.__version__))
        return
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 engines run unquantizable layers in FP16
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)


def describe_parser_error(error: trt.ParserError, onnx_nodes: Sequence[tuple[str, str]]) -> str:
    """One parser error with the node's index, name and operator (version branch: TensorRT 10 added
    ``node_name()`` / ``node_operator()``; before that the name is looked up in the ONNX graph)."""
    index = int(error.node())
    if hasattr(error, "node_name"):
        name, operator = error.node_name(), error.node_operator()
    elif 0 <= index < len(onnx_nodes):
        name, operator = onnx_nodes[index]
    else:
        name = operator = ""
    where = f"node {index} {name!r} ({operator})" if index >= 0 else "model"
    return f"{where}: {error.desc()}"


def _onnx_node_names(onnx_path: Path) -> list[tuple[str, str]]:
    try:
        import onnx
    except ImportError:
        return []
    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception:  # the parser's own message already says what is wrong with the file
        return []
    return [(node.name, node.op_type) for node in graph.node]


# --------------------------------------------------------------------------- INT8 calibration


def calibration_images(folder: Path) -> list[Path]:
    """Image files (.png, .jpg) in ``folder`` and below, or an error naming the folder."""
    from trt_perception.cli.infer import collect_images

    if not folder.is_dir():
        raise EngineBuildError(f"--calib-images {folder}: not a folder")
    images = collect_images([folder])
    if not images:
        raise EngineBuildError(f"--calib-images {folder}: no .png/.jpg images")
    return images


def calibration_tensor(path: Path, preprocess: Callable[[npt.NDArray[np.uint8], str], Any]) -> npt.NDArray:
    """One calibration image through the model's preprocessing."""
    from trt_perception.cli.infer import read_image

    pixels, channel_order = read_image(path)
    tensor, _ = preprocess(pixels, channel_order)
    return np.ascontiguousarray(tensor)


def make_entropy_calibrator(
    images: Sequence[Path],
    preprocess: Callable[[npt.NDArray[np.uint8], str], Any],
    cache_path: Path | None,
) -> trt.IInt8EntropyCalibrator2:
    """An entropy calibrator feeding ``images`` one by one; reads and writes ``cache_path``."""
    import tensorrt as trt

    cupy = import_cupy()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pending = list(images)
            self.device: Any = None
            self.capacity = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int]:
            if not self.pending:
                return []
            tensor = calibration_tensor(self.pending.pop(0), preprocess)
            if tensor.nbytes > self.capacity:
                self.device, self.capacity = cupy.cuda.alloc(tensor.nbytes), tensor.nbytes
            runtime = cupy.cuda.runtime
            runtime.memcpy(self.device.ptr, tensor.ctypes.data, tensor.nbytes, runtime.memcpyHostToDevice)
            return [int(self.device.ptr)]

        def read_calibration_cache(self) -> bytes | None:  # None: no cache, calibrate
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()


def calibration_preprocessor(
    input_spec: InputSpec, opt_hw: tuple[int, int]
) -> Callable[[npt.NDArray[np.uint8], str], Any]:
    """The spec's preprocessing (its resize mode) at the profile's opt size (calibration batches need one shape)."""
    from trt_perception.preprocess import Preprocessor
    from trt_perception.spec import DynamicSize

    if isinstance(input_spec.size, DynamicSize):
        input_spec = dataclasses.replace(input_spec, size=opt_hw)
    return Preprocessor(input_spec)


# --------------------------------------------------------------------------- build


def _network_inputs(network: trt.INetworkDefinition) -> dict[str, Shape]:
    inputs = {}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        inputs[tensor.name] = shape_of(tensor.shape)
    return inputs


def _configure_dla(builder: trt.Builder, config: trt.IBuilderConfig, core: int) -> None:
    import tensorrt as trt

    available = builder.num_DLA_cores
    if not 0 <= core < available:
        raise EngineBuildError(f"--dla-core {core}: this device has {available} DLA core(s)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def build_engine(onnx_path: Path, options: BuildOptions, input_spec: InputSpec | None = None) -> bytes:
    """Build a serialized engine (plan) from an ONNX model; writes ``options.timing_cache`` back."""
    trt_version = require_tensorrt()
    import tensorrt as trt

    if not onnx_path.is_file():
        raise EngineBuildError(f"ONNX model not found: {onnx_path}")
    messages = TensorRTMessages()
    logger = make_logger(messages)
    load_standard_plugins(logger)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt_version))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        nodes = _onnx_node_names(onnx_path)
        errors = [describe_parser_error(parser.get_error(index), nodes) for index in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}:\n  " + "\n  ".join(errors or [messages.take()]))
    config = builder.create_builder_config()
    apply_precision(config, options.precision, trt_version)
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    ranges = resolve_shape_ranges(_network_inputs(network), options, input_spec)
    profile = None
    if ranges:
        profile = builder.create_optimization_profile()
        for name, shape_range in ranges.items():
            profile.set_shape(
                name, trt.Dims(list(shape_range.min)), trt.Dims(list(shape_range.opt)), trt.Dims(list(shape_range.max))
            )
        if config.add_optimization_profile(profile) < 0:
            raise EngineBuildError(f"TensorRT rejected the optimization profile {ranges}: {messages.take()}")
    if options.precision == "int8":
        config.int8_calibrator = _calibrator(options, input_spec, ranges)
        if profile is not None:
            config.set_calibration_profile(profile)
    if options.dla_core is not None:
        _configure_dla(builder, config, options.dla_core)
    if options.timing_cache is not None:
        data = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        if not config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=False):
            LOG.warning(
                "timing cache %s was made for another GPU or TensorRT; starting a new one", options.timing_cache
            )
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(
            f"TensorRT could not build an engine from {onnx_path}: {messages.take() or 'no reason logged'}"
        )
    if options.timing_cache is not None:
        cache = config.get_timing_cache()
        if cache is not None:
            options.timing_cache.parent.mkdir(parents=True, exist_ok=True)
            options.timing_cache.write_bytes(bytes(cache.serialize()))
    return bytes(plan)


def _calibrator(
    options: BuildOptions, input_spec: InputSpec | None, ranges: Mapping[str, ShapeRange]
) -> trt.IInt8EntropyCalibrator2:
    if options.calib_images is None:  # an existing calibration cache alone is enough
        if options.calib_cache is None or not options.calib_cache.is_file():
            raise EngineBuildError(
                f"--calib-cache {options.calib_cache}: no such file, and no --calib-images to calibrate with"
            )
        return make_entropy_calibrator([], lambda pixels, order: None, options.calib_cache)
    if input_spec is None:
        raise EngineBuildError("--calib-images needs the model spec, whose preprocessing feeds the calibrator")
    images = calibration_images(options.calib_images)
    image_range = ranges.get(input_spec.name) if input_spec.name else next(iter(ranges.values()), None)
    opt_hw = (0, 0)  # unused unless the spec's size is dynamic, and then the input is in ``ranges``
    if image_range is not None:
        height_axis, width_axis = _spatial_axes(input_spec.layout)
        opt_hw = (image_range.opt[height_axis], image_range.opt[width_axis])
    preprocess = calibration_preprocessor(input_spec, opt_hw)
    return make_entropy_calibrator(images, preprocess, options.calib_cache)
