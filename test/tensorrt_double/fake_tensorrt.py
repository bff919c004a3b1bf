"""A test double of the TensorRT Python API surface this package uses, run by ONNX Runtime.

``make_tensorrt(version)`` returns a module object that behaves like ``import tensorrt`` of that
version as far as the documented API goes:

- all: named I/O tensors (``num_io_tensors``, ``get_tensor_name/mode/shape/dtype``), ``-1`` for
  dynamic dimensions until ``IExecutionContext.set_input_shape``, ``set_tensor_address`` with raw
  addresses, ``execute_async_v3(stream_handle)``, ``init_libnvinfer_plugins``, a ``Runtime`` whose
  ``deserialize_cuda_engine`` logs an error and returns ``None`` for a plan of another TensorRT
  version or GPU (the messages follow TensorRT's), builder / ONNX parser / config / profile objects.
- 8.x: ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` is required by the ONNX parser; parser
  errors have ``node()`` (index) but no ``node_name()``; 8.5 offers only the older
  ``get_profile_shape(profile_index, name)`` (the conservative reading of the 8.5 API).
- 10.x: ``EXPLICIT_BATCH`` deprecated and ignored, ``get_profile_shape`` removed,
  ``get_tensor_profile_shape(name, profile_index)``, parser errors with ``node_name()``.
- a graph made only of Identity nodes "executes" as device-to-device ``memcpyAsync`` on the stream,
  which real CUDA graphs can capture (everything else runs synchronously in ONNX Runtime).
- 11.x: strongly typed networks only; ``BuilderFlag.FP16/INT8``, ``IInt8EntropyCalibrator2``,
  ``IBuilderConfig.int8_calibrator`` and ``set_calibration_profile`` do not exist.

A "plan" is ``b"FAKEPLAN"`` + a JSON header (TensorRT version, GPU, I/O, profile, build flags) +
the ONNX bytes. Device pointers are read and written through the CuPy in ``sys.modules``: the
host-memory shim (``fake_cupy``) with ctypes, or real CuPy on a GPU machine with ``cudaMemcpy``.
"""

from __future__ import annotations

import ctypes
import enum
import json
import struct
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

PLAN_MAGIC = b"FAKEPLAN"


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


_NUMPY_OF = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.UINT8: np.uint8,
    DataType.INT64: np.int64,
}
_ORT_TYPE = {
    "tensor(float)": DataType.FLOAT,
    "tensor(float16)": DataType.HALF,
    "tensor(int8)": DataType.INT8,
    "tensor(int32)": DataType.INT32,
    "tensor(bool)": DataType.BOOL,
    "tensor(uint8)": DataType.UINT8,
    "tensor(int64)": DataType.INT64,
}


def nptype(trt_type: DataType) -> type:
    return _NUMPY_OF[DataType(trt_type)]


def volume(shape: Sequence[int]) -> int:
    return int(np.prod(list(shape), dtype=np.int64))


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass

    def log(self, severity: Severity, msg: str) -> None:  # overridden by subclasses
        pass


class Logger(ILogger):
    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity


class Dims(tuple):
    """TensorRT's ``Dims``: a sequence of ints (``-1`` = dynamic)."""


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class DeviceType(enum.IntEnum):
    GPU = 0
    DLA = 1


# --------------------------------------------------------------------------- device memory


def _cupy() -> Any:
    return sys.modules["cupy"]


def _uses_shim() -> bool:
    return getattr(_cupy(), "IS_SHIM", False)


def _read(address: int, nbytes: int) -> bytes:
    if _uses_shim():
        return ctypes.string_at(address, nbytes)
    buffer = np.empty(nbytes, np.uint8)
    runtime = _cupy().cuda.runtime
    runtime.memcpy(buffer.ctypes.data, address, nbytes, runtime.memcpyDefault)
    return buffer.tobytes()


def _write(address: int, data: bytes) -> None:
    if _uses_shim():
        ctypes.memmove(address, data, len(data))
        return
    source = np.frombuffer(data, np.uint8)
    runtime = _cupy().cuda.runtime
    runtime.memcpy(address, source.ctypes.data, len(data), runtime.memcpyDefault)


def _enqueue(stream_handle: int, work: Any) -> None:
    if _uses_shim():
        _cupy().enqueue(stream_handle, work)
    else:
        _cupy().cuda.runtime.streamSynchronize(stream_handle)
        work()


def _current_gpu() -> tuple[str, str]:
    cupy = _cupy()
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return name, f"{props['major']}.{props['minor']}"


# --------------------------------------------------------------------------- plans


def _tensor_entry(name: str, shape: Sequence[Any], ort_type: str) -> dict[str, Any]:
    return {
        "name": name,
        "shape": [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in shape],
        "dtype": int(_ORT_TYPE[ort_type]),
    }


def _pack_plan(header: dict[str, Any], onnx_bytes: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return PLAN_MAGIC + struct.pack("<I", len(encoded)) + encoded + onnx_bytes


def unpack_plan(plan: bytes) -> tuple[dict[str, Any], bytes]:
    """Header and ONNX bytes of a fake plan (tests use it to see what was built)."""
    if not plan.startswith(PLAN_MAGIC):
        raise ValueError("not a fake plan")
    (length,) = struct.unpack("<I", plan[8:12])
    return json.loads(plan[12 : 12 + length]), plan[12 + length :]


class ICudaEngine:
    def __init__(self, header: dict[str, Any], onnx_bytes: bytes) -> None:
        self.header = header
        self._onnx_bytes = onnx_bytes
        self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        self._tensors = {entry["name"]: entry for entry in header["inputs"] + header["outputs"]}
        self._input_names = [entry["name"] for entry in header["inputs"]]
        nodes = onnx.load_from_string(onnx_bytes).graph.node
        # a graph of Identity nodes only runs as device-to-device copies on the stream (asynchronous,
        # so real CUDA graphs can capture it); everything else runs in ONNX Runtime on the host
        self.identity = (
            {node.output[0]: node.input[0] for node in nodes}
            if all(node.op_type == "Identity" for node in nodes)
            else None
        )

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def get_tensor_name(self, index: int) -> str:
        return list(self._tensors)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        if name not in self._tensors:
            return TensorIOMode.NONE
        return TensorIOMode.INPUT if name in self._input_names else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self._tensors[name]["shape"])

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType(self._tensors[name]["dtype"])

    def _profile(self, name: str) -> list[Dims]:
        entry = self.header["profile"].get(name)
        if entry is None:
            static = self.get_tensor_shape(name)
            return [static, static, static]
        return [Dims(shape) for shape in entry]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)

    def serialize(self) -> bytes:
        return _pack_plan(self.header, self._onnx_bytes)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executions = 0
        self._output_shapes: dict[tuple[Any, ...], dict[str, tuple[int, ...]]] = {}

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        if self.engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            _log_error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error ({name} is not an input)")
            return False
        low, _, high = self.engine._profile(name)
        if len(shape) != len(low) or any(not lo <= dim <= hi for dim, lo, hi in zip(shape, low, high)):
            _log_error(
                f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Given invalid tensor "
                f"shape for {name}: {tuple(shape)} is outside the optimization profile {tuple(low)}..{tuple(high)})"
            )
            return False
        self.input_shapes[name] = tuple(int(dim) for dim in shape)
        return True

    def _known_output_shapes(self) -> dict[str, tuple[int, ...]] | None:
        if set(self.input_shapes) != set(self.engine._input_names):
            return None
        key = tuple(sorted(self.input_shapes.items()))
        if key not in self._output_shapes:
            feeds = {
                name: np.zeros(shape, nptype(self.engine.get_tensor_dtype(name)))
                for name, shape in self.input_shapes.items()
            }
            results = self.engine.session.run(None, feeds)
            names = [output.name for output in self.engine.session.get_outputs()]
            self._output_shapes[key] = {name: tuple(result.shape) for name, result in zip(names, results)}
        return self._output_shapes[key]

    def get_tensor_shape(self, name: str) -> Dims:
        if name in self.input_shapes:
            return Dims(self.input_shapes[name])
        if self.engine.get_tensor_mode(name) == TensorIOMode.OUTPUT:
            known = self._known_output_shapes()
            if known is not None:
                return Dims(known[name])
        return self.engine.get_tensor_shape(name)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if self.engine.get_tensor_mode(name) == TensorIOMode.NONE:
            _log_error(f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error (no tensor {name})")
            return False
        self.addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        engine = self.engine
        missing = [name for name in engine._tensors if name not in self.addresses]
        if missing or set(self.input_shapes) != set(engine._input_names):
            _log_error(f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (unset {missing or 'shapes'})")
            return False
        output_shapes = self._known_output_shapes() or {}
        input_shapes = dict(self.input_shapes)
        addresses = dict(self.addresses)

        def work() -> None:
            feeds = {}
            for name, shape in input_shapes.items():
                dtype = np.dtype(nptype(engine.get_tensor_dtype(name)))
                raw = _read(addresses[name], volume(shape) * dtype.itemsize)
                feeds[name] = np.frombuffer(raw, dtype).reshape(shape)
            results = engine.session.run(None, feeds)
            for output, result in zip(engine.session.get_outputs(), results):
                assert tuple(result.shape) == output_shapes[output.name]
                _write(addresses[output.name], np.ascontiguousarray(result).tobytes())

        self.executions += 1
        if engine.identity is not None:
            for output, source in engine.identity.items():
                nbytes = volume(output_shapes[output]) * np.dtype(nptype(engine.get_tensor_dtype(output))).itemsize
                runtime = _cupy().cuda.runtime
                runtime.memcpyAsync(
                    addresses[output], addresses[source], nbytes, runtime.memcpyDeviceToDevice, stream_handle
                )
            return True
        _enqueue(stream_handle, work)
        return True


_active_loggers: list[ILogger] = []


def _log_error(message: str) -> None:
    for logger in _active_loggers[-1:]:
        logger.log(Severity.ERROR, message)


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        self.logger = logger
        _active_loggers.append(logger)

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        data = bytes(serialized_engine)
        version = sys.modules["tensorrt"].__version__
        if not data.startswith(PLAN_MAGIC):
            self.logger.log(
                Severity.ERROR,
                "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: Serialization "
                "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)",
            )
            return None
        header, onnx_bytes = unpack_plan(data)
        if header["trt_version"] != version:
            self.logger.log(
                Severity.ERROR,
                "1: [stdArchiveReader.cpp::StdArchiveReader::42] Error Code 1: Serialization (Serialization "
                "assertion stdVersionRead == serializationVersion failed.Version tag does not match. "
                f"The engine plan file is not compatible with this version of TensorRT, expecting library "
                f"version {version} got {header['trt_version']}, please rebuild.)",
            )
            return None
        missing_plugins = [
            name for name in header.get("plugins", []) if not sys.modules["tensorrt"].plugin_initializations
        ]
        if missing_plugins:
            self.logger.log(Severity.ERROR, f"getPluginCreator could not find plugin: {missing_plugins[0]} version: 1")
            return None
        _, compute = _current_gpu()
        if header["compute"] != compute:
            self.logger.log(
                Severity.ERROR,
                "6: The engine plan file is generated on an incompatible device, expecting compute "
                f"{compute} got compute {header['compute']}, please rebuild.",
            )
            return None
        return ICudaEngine(header, onnx_bytes)


# --------------------------------------------------------------------------- builder


class ITensor:
    def __init__(self, name: str, shape: Sequence[int], dtype: DataType) -> None:
        self.name = name
        self.shape = Dims(shape)
        self.dtype = dtype


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.inputs: list[ITensor] = []
        self.outputs: list[ITensor] = []
        self.onnx_bytes = b""

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, index: int) -> ITensor:
        return self.inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self.outputs[index]


class ParserError:
    def __init__(self, description: str, node: int, node_name: str, node_operator: str) -> None:
        self._description = description
        self._node = node
        self._node_name = node_name
        self._node_operator = node_operator

    def desc(self) -> str:
        return self._description

    def node(self) -> int:
        return self._node

    def code(self) -> int:
        return 8 if self._node >= 0 else 4


class ParserErrorWithNames(ParserError):
    """TensorRT 10 added the node's name and operator to parser errors."""

    def node_name(self) -> str:
        return self._node_name

    def node_operator(self) -> str:
        return self._node_operator


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self.network = network
        self.logger = logger
        self.errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> ParserError:
        return self.errors[index]

    def _error(self, description: str, node: int = -1, name: str = "", operator: str = "") -> None:
        error_type = ParserErrorWithNames if _major() >= 10 else ParserError
        self.errors.append(error_type(description, node, name, operator))

    def parse_from_file(self, model: str) -> bool:
        explicit_batch = getattr(NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
        if _major() < 10 and not self.network.flags & (1 << int(explicit_batch or 0)):
            self._error("ONNX parser only supports networks with an explicit batch dimension")
            return False
        try:
            data = Path(model).read_bytes()
            proto = onnx.load_from_string(data)
        except (OSError, Exception) as error:  # the real parser reports any failure the same way
            self._error(f"Failed to parse ONNX model from file: {model} ({error})")
            return False
        for index, node in enumerate(proto.graph.node):
            if not onnx.defs.has(node.op_type, node.domain):
                self._error(
                    f"No importer registered for op: {node.op_type}. Attempting to import as plugin.",
                    index,
                    node.name,
                    node.op_type,
                )
        if self.errors:
            return False
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        self.network.inputs = [
            ITensor(i.name, _tensor_entry(i.name, i.shape, i.type)["shape"], _ORT_TYPE[i.type])
            for i in session.get_inputs()
        ]
        self.network.outputs = [
            ITensor(o.name, _tensor_entry(o.name, o.shape, o.type)["shape"], _ORT_TYPE[o.type])
            for o in session.get_outputs()
        ]
        self.network.onnx_bytes = data
        return True


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list[list[int]]] = {}

    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
        self.shapes[input] = [list(min), list(opt), list(max)]


class ITimingCache:
    def __init__(self, entries: int) -> None:
        self.entries = entries

    def serialize(self) -> bytes:
        return f"FAKETIMINGCACHE:{self.entries}".encode()


class IBuilderConfig:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.memory_pool_limits: dict[int, int] = {}
        self.profiles: list[IOptimizationProfile] = []
        self.default_device_type = DeviceType.GPU
        self.DLA_core = -1
        self.timing_cache: ITimingCache | None = None
        if _major() < 11:
            self.int8_calibrator: Any = None
            self.calibration_profile: IOptimizationProfile | None = None

    def set_flag(self, flag: enum.Enum) -> None:
        self.flags.add(flag.name)

    def get_flag(self, flag: enum.Enum) -> bool:
        return flag.name in self.flags

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self.memory_pool_limits[int(pool)] = pool_size

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        for name, (low, opt, high) in profile.shapes.items():
            if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
                _log_error(f"Optimization profile for {name}: need min <= opt <= max")
                return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
        self.calibration_profile = profile
        return True

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        data = bytes(serialized_timing_cache)
        entries = int(data.split(b":")[1]) if data.startswith(b"FAKETIMINGCACHE:") else 0
        return ITimingCache(entries)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self.timing_cache


class Builder:
    """Builds fake plans; ``num_DLA_cores`` can be set by tests."""

    num_DLA_cores = 0

    def __init__(self, logger: ILogger) -> None:
        self.logger = logger
        _active_loggers.append(logger)
        if _major() < 11:
            self.platform_has_fast_fp16 = True

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def _calibrate(self, network: INetworkDefinition, config: IBuilderConfig) -> list[float] | None:
        """Sums of the calibration batches read from their device pointers ([] when a cache is used)."""
        calibrator = config.int8_calibrator
        if calibrator is None:
            self.logger.log(Severity.ERROR, "Calibration failure occurred with no scaling factors detected.")
            return None
        if calibrator.read_calibration_cache():
            return []
        names = [tensor.name for tensor in network.inputs]
        profile = config.calibration_profile or (config.profiles[0] if config.profiles else None)
        sums: list[float] = []
        while True:
            pointers = calibrator.get_batch(names)
            if not pointers:
                break
            for name, pointer in zip(names, pointers):
                shape = profile.shapes[name][1] if profile and name in profile.shapes else list(network.inputs[0].shape)
                dtype = np.dtype(nptype(network.inputs[0].dtype))
                values = np.frombuffer(_read(int(pointer), volume(shape) * dtype.itemsize), dtype)
                if not np.all(np.isfinite(values)):
                    self.logger.log(Severity.ERROR, "Calibration batch holds NaN/Inf")
                    return None
                sums.append(float(values.astype(np.float64).sum()))
        calibrator.write_calibration_cache(f"FAKECALIBRATION:{len(sums)}".encode())
        return sums

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        dynamic = [t.name for t in network.inputs if -1 in t.shape]
        profile = config.profiles[0].shapes if config.profiles else {}
        uncovered = [name for name in dynamic if name not in profile]
        if uncovered:
            self.logger.log(
                Severity.ERROR,
                "4: [network.cpp::validate] Error Code 4: Network has dynamic or shape inputs, but no "
                f"optimization profile has been defined for {uncovered[0]}.",
            )
            return None
        if config.default_device_type == DeviceType.DLA and not 0 <= config.DLA_core < self.num_DLA_cores:
            self.logger.log(Severity.ERROR, f"DLA core {config.DLA_core} is not available")
            return None
        calibration_sums = self._calibrate(network, config) if "INT8" in config.flags else []
        if calibration_sums is None:
            return None
        gpu_name, compute = _current_gpu()
        timing_entries = config.timing_cache.entries if config.timing_cache else None
        if config.timing_cache is not None:
            config.timing_cache.entries += 1
        header = {
            "trt_version": sys.modules["tensorrt"].__version__,
            "gpu_name": gpu_name,
            "compute": compute,
            "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": int(t.dtype)} for t in network.inputs],
            "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": int(t.dtype)} for t in network.outputs],
            "profile": profile,
            "flags": sorted(config.flags),
            "network_flags": network.flags,
            "workspace": config.memory_pool_limits.get(int(MemoryPoolType.WORKSPACE)),
            "dla_core": config.DLA_core if config.default_device_type == DeviceType.DLA else None,
            "calibration_sums": calibration_sums,
            "timing_cache_entries_before": timing_entries,
        }
        return _pack_plan(header, network.onnx_bytes)


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    GPU_FALLBACK = 3


class IInt8EntropyCalibrator2:
    def __init__(self) -> None:
        pass


def _major() -> int:
    return int(sys.modules["tensorrt"].__version__.split(".")[0])


_COMMON = [
    "DataType",
    "nptype",
    "volume",
    "TensorIOMode",
    "ILogger",
    "Logger",
    "Dims",
    "MemoryPoolType",
    "DeviceType",
    "ICudaEngine",
    "IExecutionContext",
    "Runtime",
    "INetworkDefinition",
    "ITensor",
    "OnnxParser",
    "IOptimizationProfile",
    "ITimingCache",
    "IBuilderConfig",
    "Builder",
    "ParserError",
]


def make_tensorrt(version: str) -> types.ModuleType:
    """A fresh ``tensorrt`` module with the API surface of ``version`` (e.g. "8.5.2.2", "10.3.0", "11.4.0")."""
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    major, minor = (int(part) for part in version.split(".")[:2])
    for name in _COMMON:
        setattr(module, name, globals()[name])
    if major < 11:
        module.BuilderFlag = BuilderFlag
        module.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        module.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    else:
        module.BuilderFlag = enum.IntEnum("BuilderFlag", {"GPU_FALLBACK": 3})
        module.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
    engine_type = type(f"ICudaEngine_{major}_{minor}", (ICudaEngine,), {})
    if (major, minor) < (10, 0):
        engine_type.get_profile_shape = lambda self, profile_index, binding: self._profile(binding)
    if (major, minor) >= (8, 6):
        engine_type.get_tensor_profile_shape = lambda self, name, profile_index: self._profile(name)
    runtime_type = type("Runtime", (Runtime,), {})
    base_deserialize = Runtime.deserialize_cuda_engine

    def deserialize_cuda_engine(self: Runtime, serialized_engine: bytes) -> ICudaEngine | None:
        engine = base_deserialize(self, serialized_engine)
        return None if engine is None else engine_type(engine.header, engine._onnx_bytes)

    runtime_type.deserialize_cuda_engine = deserialize_cuda_engine
    module.Runtime = runtime_type
    module.plugin_initializations = []

    def init_libnvinfer_plugins(logger: ILogger, namespace: str) -> bool:
        module.plugin_initializations.append(namespace)
        return True

    module.init_libnvinfer_plugins = init_libnvinfer_plugins
    return module
