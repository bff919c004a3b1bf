"""TensorRT backend: a serialized engine run through TensorRT's named-tensor API (TensorRT >= 8.5).

TensorRT and CuPy (device memory, pinned host memory, the CUDA stream) are imported only when a
backend is created, so everything else in the package works without them. Inputs and outputs each
live in one device buffer mirrored by one pinned host buffer (``_StagingArena``), so a frame costs
one host-to-device and one device-to-host copy whatever the number of tensors; buffers grow only
when a larger input shape arrives. ``infer_device`` skips both copies for callers whose data is
already on the GPU. Differences between TensorRT versions are confined to the small functions
marked "version branch".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from trt_perception.backends.base import TensorInfo
from trt_perception.errors import InferenceError, ModelLoadError
from trt_perception.tensorrt.engine_builder import BuildOptions
from trt_perception.tensorrt.engine_cache import EngineCache
from trt_perception.tensorrt.runtime_support import (
    Shape,
    TensorRTMessages,
    current_gpu,
    import_cupy,
    load_standard_plugins,
    make_logger,
    require_tensorrt,
    shape_of,
)

if TYPE_CHECKING:
    import tensorrt as trt

    from trt_perception.spec import ModelSpec

LOG = logging.getLogger(__name__)

ALIGNMENT = 256  # bytes; TensorRT wants I/O addresses aligned, 256 suits every data type


class EngineMismatchError(ModelLoadError):
    """An engine file that this TensorRT or this GPU cannot load.

    ``reason`` is ``"tensorrt_version"``, ``"gpu"`` or ``"unreadable"``; the engine cache rebuilds
    the engine from its ONNX model in every case.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- version branches


def profile_shapes(engine: trt.ICudaEngine, name: str) -> tuple[Shape, Shape, Shape]:
    """Min, opt and max shape of input ``name`` in optimization profile 0 (version branch).

    ``get_tensor_profile_shape(name, profile)`` is the named-tensor call (TensorRT 8.6 and later,
    the only one since 10.0); 8.5 engines may only offer ``get_profile_shape(profile, binding)``.
    """
    if hasattr(engine, "get_tensor_profile_shape"):
        shapes = engine.get_tensor_profile_shape(name, 0)
    else:
        shapes = engine.get_profile_shape(0, name)  # type: ignore[attr-defined]  # TensorRT 8.x only
    low, opt, high = (shape_of(shape) for shape in shapes)
    return low, opt, high


def classify_load_failure(log: str) -> str:
    """Why ``deserialize_cuda_engine`` returned ``None``, from what TensorRT logged (version branch).

    TensorRT 8.x and 10.x log "Version tag does not match" / "not compatible with this version of
    TensorRT" for a plan of another release, and "generated on an incompatible device" (or a
    "Platform specific tag mismatch" between Jetson and desktop) for another GPU.
    """
    text = log.lower()
    if "incompatible device" in text or "platform specific tag" in text or "expecting compute" in text:
        return "gpu"
    if "version" in text:
        return "tensorrt_version"
    return "unreadable"


def deserialize_engine(runtime: trt.Runtime, plan: bytes, source: str, messages: TensorRTMessages) -> trt.ICudaEngine:
    """Deserialize a plan or raise ``EngineMismatchError`` naming the cause."""
    import tensorrt as trt

    engine = runtime.deserialize_cuda_engine(plan)
    if engine is not None:
        return engine
    log = messages.take() or "TensorRT logged no reason"
    reason = classify_load_failure(log)
    explanation = {
        "tensorrt_version": f"was built by another TensorRT version than this one ({trt.__version__})",
        "gpu": f"was built for another GPU than this one ({current_gpu().name})",
        "unreadable": "is not a TensorRT engine this runtime can read (corrupt or of another TensorRT version)",
    }[reason]
    raise EngineMismatchError(
        f"engine {source} {explanation}; rebuild it on this machine with `trt-perception build`, or give "
        f"the spec the ONNX model so the engine cache rebuilds it. TensorRT said: {log}",
        reason,
    )


# --------------------------------------------------------------------------- buffers


def _aligned(nbytes: int) -> int:
    return max(ALIGNMENT, -(-nbytes // ALIGNMENT) * ALIGNMENT)


class _StagingArena:
    """One device buffer and one pinned host buffer holding several tensors at aligned offsets.

    ``arrange`` lays tensors out for their current shapes and reallocates only when the total grows,
    so one ``upload``/``download`` moves every tensor at once.
    """

    def __init__(self, cupy: ModuleType) -> None:
        self._cupy = cupy
        self.capacity = 0
        self.used = 0
        self._device: Any = None
        self._host: Any = None
        self._host_bytes: npt.NDArray[np.uint8] = np.zeros(0, np.uint8)
        self.layout: dict[str, tuple[int, Shape, np.dtype]] = {}
        self.allocations = 0

    def arrange(self, tensors: Mapping[str, tuple[Shape, np.dtype]]) -> None:
        """Give every tensor ``name -> (shape, dtype)`` a place; grow the buffers when needed."""
        offset, layout = 0, {}
        for name, (shape, dtype) in tensors.items():
            layout[name] = (offset, shape, dtype)
            offset += _aligned(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        if offset > self.capacity:
            self._device = None  # release before allocating the larger buffers
            self._host = None
            self._device = self._cupy.cuda.alloc(offset)
            self._host = self._cupy.cuda.alloc_pinned_memory(offset)
            self._host_bytes = np.frombuffer(self._host, np.uint8, offset)
            self.capacity = offset
            self.allocations += 1
        self.layout, self.used = layout, offset

    def device_address(self, name: str) -> int:
        return int(self._device.ptr) + self.layout[name][0]

    def host_view(self, name: str) -> npt.NDArray[Any]:
        offset, shape, dtype = self.layout[name]
        count = int(np.prod(shape, dtype=np.int64))
        return self._host_bytes[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape)

    def device_view(self, name: str) -> Any:
        offset, shape, dtype = self.layout[name]
        return self._cupy.ndarray(shape, dtype, memptr=self._device + offset)

    def upload(self, stream: Any) -> None:
        runtime = self._cupy.cuda.runtime
        runtime.memcpyAsync(self._device.ptr, self._host.ptr, self.used, runtime.memcpyHostToDevice, stream.ptr)

    def download(self, stream: Any) -> None:
        runtime = self._cupy.cuda.runtime
        runtime.memcpyAsync(self._host.ptr, self._device.ptr, self.used, runtime.memcpyDeviceToHost, stream.ptr)

    def release(self) -> None:
        self._device = self._host = None
        self._host_bytes = np.zeros(0, np.uint8)
        self.capacity = self.used = 0


# --------------------------------------------------------------------------- backend


@dataclass(frozen=True)
class _IOTensor:
    name: str
    is_input: bool
    shape: Shape  # -1 for dynamic dimensions
    dtype: np.dtype
    profile: tuple[Shape, Shape, Shape] | None  # inputs only

    def info(self) -> TensorInfo:
        return TensorInfo(self.name, tuple(None if dim < 0 else dim for dim in self.shape), self.dtype)


class TensorRTBackend:
    """A TensorRT engine behind the ``Backend`` interface (see ``backends/base.py``).

    ``cuda_graph=True`` records each frame's copies and execution as a CUDA graph after the first
    frame of a given input shape and replays it; it falls back to plain execution (with a warning)
    when capture fails.
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, *, cuda_graph: bool = False) -> None:
        path = Path(engine_path)
        require_tensorrt()
        cupy = import_cupy()
        import tensorrt as trt

        try:
            plan = path.read_bytes()
        except OSError as error:
            raise ModelLoadError(f"cannot read TensorRT engine {path}: {error.strerror or error}") from error
        self.engine_path = path
        self._messages = TensorRTMessages()
        self._logger = make_logger(self._messages)
        load_standard_plugins(self._logger)
        self._runtime = trt.Runtime(self._logger)
        self._engine = deserialize_engine(self._runtime, plan, str(path), self._messages)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ModelLoadError(f"TensorRT could not create an execution context for {path}: {self._messages.take()}")
        self._tensors = self._discover_tensors()
        self._cupy = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._input_arena = _StagingArena(cupy)
        self._output_arena = _StagingArena(cupy)
        self._input_shapes: dict[str, Shape] = {}
        self._output_shapes: dict[str, Shape] = {}
        self._inputs_in_arena = False
        self.cuda_graph = cuda_graph
        self._graph: Any = None

    def _discover_tensors(self) -> dict[str, _IOTensor]:
        import tensorrt as trt

        tensors = {}
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = shape_of(self._engine.get_tensor_shape(name))
            try:
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            except TypeError as error:
                raise ModelLoadError(
                    f"engine {self.engine_path}: tensor {name!r} has data type "
                    f"{self._engine.get_tensor_dtype(name)}, which numpy cannot hold"
                ) from error
            profile = profile_shapes(self._engine, name) if is_input else None
            tensors[name] = _IOTensor(name, is_input, shape, dtype, profile)
        return tensors

    @property
    def inputs(self) -> list[TensorInfo]:
        """Input tensors in engine order (``None`` for dynamic dimensions)."""
        return [tensor.info() for tensor in self._tensors.values() if tensor.is_input]

    @property
    def outputs(self) -> list[TensorInfo]:
        """Output tensors in engine order (``None`` for dimensions known only at run time)."""
        return [tensor.info() for tensor in self._tensors.values() if not tensor.is_input]

    def input_profile(self, name: str) -> tuple[Shape, Shape, Shape]:
        """Min, opt and max shape the engine accepts for input ``name``."""
        tensor = self._tensors.get(name)
        if tensor is None or tensor.profile is None:
            raise InferenceError(f"engine {self.engine_path} has no input named {name!r}")
        return tensor.profile

    # ------------------------------------------------------------------ shapes

    def _require_open(self) -> None:
        if not hasattr(self, "_context"):
            raise InferenceError(f"the TensorRT backend for {self.engine_path} was closed")

    def _check_inputs(self, arrays: Mapping[str, Any]) -> dict[str, Shape]:
        self._require_open()
        expected = [tensor for tensor in self._tensors.values() if tensor.is_input]
        unknown = sorted(set(arrays) - {tensor.name for tensor in expected})
        if unknown:
            raise InferenceError(
                f"engine {self.engine_path} has no input named {unknown[0]!r}; its inputs are "
                f"{[tensor.name for tensor in expected]}"
            )
        shapes = {}
        for tensor in expected:
            if tensor.name not in arrays:
                raise InferenceError(f"input {tensor.name!r} of engine {self.engine_path} was not given")
            array = arrays[tensor.name]
            if np.dtype(array.dtype) != tensor.dtype:
                raise InferenceError(
                    f"input {tensor.name!r} has dtype {np.dtype(array.dtype)}, the engine expects {tensor.dtype}"
                )
            shapes[tensor.name] = tuple(int(dim) for dim in array.shape)
        return shapes

    def _check_profile(self, tensor: _IOTensor, shape: Shape) -> None:
        assert tensor.profile is not None
        low, _, high = tensor.profile
        if len(shape) != len(tensor.shape):
            raise InferenceError(
                f"input {tensor.name!r} has shape {shape}, the engine expects rank {len(tensor.shape)} {tensor.shape}"
            )
        for axis, (dim, lo, hi) in enumerate(zip(shape, low, high)):
            if not lo <= dim <= hi:
                raise InferenceError(
                    f"input {tensor.name!r} shape {shape} is outside the engine's optimization profile "
                    f"(dimension {axis} is {dim}, allowed {lo}..{hi}; min {low}, max {high}); rebuild the "
                    "engine with a wider profile (trt-perception build --min-shape/--max-shape)"
                )

    def _set_input_shapes(self, shapes: Mapping[str, Shape]) -> None:
        if shapes == self._input_shapes:
            return
        self._input_shapes = {}  # until every step below succeeds, the next call sets shapes again
        for name, shape in shapes.items():
            self._check_profile(self._tensors[name], shape)
            if not self._context.set_input_shape(name, shape):
                raise InferenceError(f"TensorRT rejected shape {shape} for input {name!r}: {self._messages.take()}")
        output_shapes = {}
        for tensor in self._tensors.values():
            if not tensor.is_input:
                shape = shape_of(self._context.get_tensor_shape(tensor.name))
                if any(dim < 0 for dim in shape):
                    raise InferenceError(
                        f"output {tensor.name!r} has shape {shape} even with all input shapes set: outputs "
                        "whose size depends on the data are not supported by this backend"
                    )
                output_shapes[tensor.name] = shape
        self._input_arena.arrange({name: (shape, self._tensors[name].dtype) for name, shape in shapes.items()})
        self._output_arena.arrange({name: (shape, self._tensors[name].dtype) for name, shape in output_shapes.items()})
        for name in output_shapes:
            self._bind(name, self._output_arena.device_address(name))
        self._input_shapes, self._output_shapes = dict(shapes), output_shapes
        self._inputs_in_arena = False
        self._graph = None

    def _bind(self, name: str, address: int) -> None:
        if not self._context.set_tensor_address(name, address):
            raise InferenceError(f"TensorRT rejected the buffer address of tensor {name!r}: {self._messages.take()}")

    def _bind_inputs_to_arena(self) -> None:
        if not self._inputs_in_arena:
            for name in self._input_shapes:
                self._bind(name, self._input_arena.device_address(name))
            self._inputs_in_arena = True

    # ------------------------------------------------------------------ execution

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self.stream.ptr):
            raise InferenceError(f"TensorRT execution failed for {self.engine_path}: {self._messages.take()}")

    def _enqueue_frame(self) -> None:
        self._input_arena.upload(self.stream)
        self._execute()
        self._output_arena.download(self.stream)

    def _run_frame(self) -> None:
        if self._graph is not None:
            self._graph.launch(self.stream)
            return
        self._enqueue_frame()
        if self.cuda_graph:
            self.stream.synchronize()  # the first frame of a shape runs plainly; later ones replay it
            self._graph = self._capture_graph()

    def _capture_graph(self) -> Any:
        try:
            self.stream.begin_capture()
        except Exception as error:  # CuPy raises CUDARuntimeError or RuntimeError depending on build
            LOG.warning("CUDA graph capture unavailable (%s); running without graphs", error)
            self.cuda_graph = False
            return None
        try:
            self._enqueue_frame()
        except Exception as error:  # a kernel or plugin that cannot be captured
            try:
                self.stream.end_capture()
            except Exception:  # capture already invalidated by the failure above
                LOG.debug("ending the failed CUDA graph capture raised too", exc_info=True)
            LOG.warning("CUDA graph capture failed (%s); running without graphs", error)
            self.cuda_graph = False
            return None
        return self.stream.end_capture()

    def infer(
        self,
        inputs: Mapping[str, npt.NDArray],
        outputs: Mapping[str, npt.NDArray] | None = None,
    ) -> dict[str, npt.NDArray]:
        """Run the engine on host arrays: one upload, one download; fills ``outputs`` when given."""
        self._set_input_shapes(self._check_inputs(inputs))
        if outputs is not None:
            self._check_outputs(outputs)
        self._bind_inputs_to_arena()
        for name, array in inputs.items():
            np.copyto(self._input_arena.host_view(name), array)
        self._run_frame()
        self.stream.synchronize()
        if outputs is None:
            return {name: self._output_arena.host_view(name).copy() for name in self._output_shapes}
        for name in self._output_shapes:
            np.copyto(outputs[name], self._output_arena.host_view(name))
        return dict(outputs)

    def _check_outputs(self, outputs: Mapping[str, npt.NDArray]) -> None:
        for name, shape in self._output_shapes.items():
            given = outputs.get(name)
            if given is None:
                raise InferenceError(f"outputs: no array for output {name!r}")
            if given.shape != shape or given.dtype != self._tensors[name].dtype:
                raise InferenceError(
                    f"outputs[{name!r}] is {given.dtype}{list(given.shape)}, this frame needs "
                    f"{self._tensors[name].dtype}{list(shape)} (use allocate_outputs)"
                )

    def infer_device(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run on CuPy arrays already on the GPU, without host copies.

        Inputs must be C-contiguous and ready when called (e.g. produced on ``self.stream``). The
        returned CuPy arrays are views of the backend's output buffer, valid until the next call.
        """
        self._set_input_shapes(self._check_inputs(inputs))
        for name, array in inputs.items():
            if not array.flags.c_contiguous:
                raise InferenceError(f"input {name!r}: device arrays must be C-contiguous")
            self._bind(name, int(array.data.ptr))
        self._inputs_in_arena = False
        self._execute()
        self.stream.synchronize()
        return {name: self._output_arena.device_view(name) for name in self._output_shapes}

    def allocate_outputs(self, input_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, npt.NDArray]:
        """Host arrays for every output at these input shapes, to pass to ``infer`` again and again."""
        self._require_open()
        names = [tensor.name for tensor in self._tensors.values() if tensor.is_input]
        if sorted(input_shapes) != sorted(names):
            raise InferenceError(f"allocate_outputs: expected shapes of the inputs {names}, got {sorted(input_shapes)}")
        self._set_input_shapes({name: tuple(int(dim) for dim in shape) for name, shape in input_shapes.items()})
        return {name: np.empty(shape, self._tensors[name].dtype) for name, shape in self._output_shapes.items()}

    @property
    def buffer_allocations(self) -> int:
        """How many times the staging buffers were (re)allocated: once, plus once per growth."""
        return self._input_arena.allocations + self._output_arena.allocations

    def close(self) -> None:
        """Release the engine, its context and the buffers (idempotent)."""
        self._graph = None
        self._input_arena.release()
        self._output_arena.release()
        for attribute in ("_context", "_engine", "_runtime"):
            if hasattr(self, attribute):
                delattr(self, attribute)


def create_tensorrt_backend(spec: ModelSpec, *, cuda_graph: bool = False) -> TensorRTBackend:
    """The spec's engine, or one built from its ONNX model through the engine cache.

    An ``engine`` that exists and loads is used as is. When it is missing, or was built by another
    TensorRT version or for another GPU, and the spec also names its ONNX ``model``, the engine
    cache builds (once, under a lock) and reuses an engine for this machine instead, in the spec's
    ``tensorrt.precision`` (part of the cache key, so each precision has its own engine).
    """
    if spec.engine is not None:
        if spec.engine.is_file() or spec.model is None:
            try:
                return TensorRTBackend(spec.engine, cuda_graph=cuda_graph)
            except EngineMismatchError as error:
                if spec.model is None:
                    raise
                LOG.warning("%s -- using the engine cache instead", error)
        else:
            LOG.warning("engine %s does not exist; building one from %s", spec.engine, spec.model)
    if spec.model is None:
        raise ModelLoadError(f"spec {spec.name}: neither a loadable engine nor an ONNX model to build one from")
    return EngineCache().get_or_build(
        spec.model,
        BuildOptions(
            precision=spec.tensorrt.precision,
            calib_images=spec.tensorrt.calibration_images,
            calib_cache=spec.tensorrt.calibration_cache,
        ),
        spec.input,
        lambda path: TensorRTBackend(path, cuda_graph=cuda_graph),
    )
