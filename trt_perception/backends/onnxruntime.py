"""ONNX Runtime backend: runs an ``.onnx`` model on the best execution provider installed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from trt_perception.backends.base import TensorInfo
from trt_perception.errors import InferenceError, ModelLoadError

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(uint16)": np.uint16,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def default_providers() -> list[str]:
    """The installed execution providers in order of preference: TensorRT, CUDA, CPU."""
    available = ort.get_available_providers()
    return [provider for provider in PREFERRED_PROVIDERS if provider in available]


def _tensor_info(node: ort.NodeArg) -> TensorInfo:
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else None for dim in node.shape)
    dtype = _ONNX_TYPES.get(node.type)
    if dtype is None:
        raise ModelLoadError(f"tensor {node.name!r} has unsupported type {node.type}")
    return TensorInfo(node.name, shape, np.dtype(dtype))


def tensorrt_plugin_ops(model_path: Path) -> list[str]:
    """The TensorRT plugin op types (``*_TRT``, e.g. ``EfficientNMS_TRT``) used in an ONNX model's graph."""
    try:
        import onnx  # only needed to explain a failed load

        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # no onnx package, or not readable as ONNX: the caller reports ONNX Runtime's own error
        return []
    return sorted({node.op_type for node in model.graph.node if node.op_type.endswith("_TRT")})


def _format_shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"


class OnnxRuntimeBackend:
    """A model loaded into an ``onnxruntime.InferenceSession``.

    ``providers`` defaults to ``default_providers()``; ``intra_op_threads`` (0 = ONNX Runtime's
    choice) bounds the threads one inference uses.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.exists():
            raise ModelLoadError(f"ONNX model file not found: {self.model_path}")
        if not self.model_path.is_file():
            raise ModelLoadError(f"ONNX model path is not a file: {self.model_path}")
        available = ort.get_available_providers()
        chosen = list(providers) if providers else default_providers()
        missing = [provider for provider in chosen if provider not in available]
        if missing:
            raise ModelLoadError(
                f"execution provider {', '.join(missing)} not available for {self.model_path} "
                f"(installed: {', '.join(available)})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3  # errors only: unused-initializer warnings are noise
        try:
            self._session = ort.InferenceSession(str(self.model_path), sess_options=options, providers=chosen)
        except Exception as error:  # ONNX Runtime raises its own pybind exception types
            plugins = tensorrt_plugin_ops(self.model_path)
            if plugins:
                raise ModelLoadError(
                    f"{self.model_path} uses the TensorRT plugin op(s) {', '.join(plugins)}, which ONNX Runtime "
                    "cannot run: this model runs only with backend tensorrt (set `backend: tensorrt` in the spec)"
                ) from error
            raise ModelLoadError(f"cannot load ONNX model {self.model_path}: {error}") from error
        self._inputs = [_tensor_info(node) for node in self._session.get_inputs()]
        self._outputs = [_tensor_info(node) for node in self._session.get_outputs()]
        self._symbolic_inputs = [
            (info.name, index, dim)
            for node, info in zip(self._session.get_inputs(), self._inputs)
            for index, dim in enumerate(node.shape)
            if isinstance(dim, str)
        ]
        self._symbolic_outputs = {node.name: list(node.shape) for node in self._session.get_outputs()}
        self._binding: ort.IOBinding | None = None
        self._bound_layout: dict[str, tuple[int, tuple[int, ...], np.dtype]] = {}
        self._bound_arrays: dict[str, npt.NDArray] = {}

    @property
    def inputs(self) -> list[TensorInfo]:
        """Input tensors in model order."""
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        """Output tensors in model order."""
        return list(self._outputs)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses."""
        return list(self._session.get_providers())

    def infer(
        self,
        inputs: Mapping[str, npt.NDArray],
        outputs: Mapping[str, npt.NDArray] | None = None,
    ) -> dict[str, npt.NDArray]:
        """Run the model; outputs given in ``outputs`` are written in place (IOBinding)."""
        self._check_inputs(inputs)
        try:
            if not outputs:
                names = [info.name for info in self._outputs]
                return dict(zip(names, self._session.run(names, dict(inputs))))
            return self._infer_bound(inputs, outputs)
        except InferenceError:
            raise
        except Exception as error:
            raise InferenceError(f"inference of {self.model_path.name} failed: {error}") from error

    def _infer_bound(self, inputs: Mapping[str, npt.NDArray], outputs: Mapping[str, npt.NDArray]) -> dict[str, npt.NDArray]:
        unknown = set(outputs) - {info.name for info in self._outputs}
        if unknown:
            raise InferenceError(f"output buffer {sorted(unknown)[0]!r} is not an output of {self.model_path.name}")
        for info in self._outputs:
            if info.name in outputs:
                self._check_buffer(info, outputs[info.name])
        binding = self._binding_for(inputs, outputs)
        self._session.run_with_iobinding(binding)
        if len(outputs) == len(self._outputs):
            return {info.name: outputs[info.name] for info in self._outputs}
        results = dict(outputs)
        for info, value in zip(self._outputs, binding.get_outputs()):
            if info.name not in results:
                results[info.name] = value.numpy()
        return {info.name: results[info.name] for info in self._outputs}

    def _binding_for(self, inputs: Mapping[str, npt.NDArray], outputs: Mapping[str, npt.NDArray]) -> ort.IOBinding:
        """The session's IOBinding with these arrays bound, reused (no new binds) while the arrays'
        memory, shapes and dtypes stay the same, as with ``Pipeline``'s reused buffers. The bound
        arrays are kept referenced, so their memory cannot be freed and reused while bound."""
        bound = {name: np.ascontiguousarray(array) for name, array in inputs.items()}
        bound.update(outputs)
        layout = {name: (array.ctypes.data, array.shape, array.dtype) for name, array in bound.items()}
        if self._binding is not None and layout == self._bound_layout:
            return self._binding
        binding = self._session.io_binding()
        for name, array in bound.items():
            if name in inputs:
                binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
            else:
                binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        for info in self._outputs:
            if info.name not in outputs:
                binding.bind_output(info.name, "cpu")
        self._binding, self._bound_layout, self._bound_arrays = binding, layout, bound
        return binding

    def allocate_outputs(self, input_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, npt.NDArray]:
        """Arrays for the outputs whose shapes follow from ``input_shapes`` (static dimensions or
        dimensions named like an input's); other outputs are allocated by each ``infer`` call."""
        known: dict[str, int] = {}
        for name, index, symbol in self._symbolic_inputs:
            if name in input_shapes and index < len(input_shapes[name]):
                known[symbol] = int(input_shapes[name][index])
        buffers = {}
        for info in self._outputs:
            dims = [dim if isinstance(dim, int) else known.get(dim) for dim in self._symbolic_outputs[info.name]]
            shape = tuple(dim for dim in dims if isinstance(dim, int) and dim >= 0)
            if len(shape) == len(dims):
                buffers[info.name] = np.empty(shape, info.dtype)
        return buffers

    def close(self) -> None:
        """Release the session."""
        self._binding, self._bound_arrays = None, {}
        del self._session

    def _check_inputs(self, inputs: Mapping[str, npt.NDArray]) -> None:
        expected = {info.name: info for info in self._inputs}
        for name, array in inputs.items():
            info = expected.get(name)
            if info is None:
                raise InferenceError(
                    f"input tensor {name!r} is not an input of {self.model_path.name} "
                    f"(inputs: {', '.join(expected)})"
                )
            if not isinstance(array, np.ndarray):
                raise InferenceError(f"input tensor {name!r}: expected a numpy array, got {type(array).__name__}")
            if array.ndim != len(info.shape):
                raise InferenceError(
                    f"input tensor {name!r}: expected rank {len(info.shape)} {_format_shape(info.shape)}, "
                    f"got rank {array.ndim} {list(array.shape)}"
                )
            if any(dim is not None and dim != size for dim, size in zip(info.shape, array.shape)):
                raise InferenceError(
                    f"input tensor {name!r}: expected shape {_format_shape(info.shape)}, got {list(array.shape)}"
                )
            if array.dtype != info.dtype:
                raise InferenceError(f"input tensor {name!r}: expected dtype {info.dtype}, got {array.dtype}")
        missing = [name for name in expected if name not in inputs]
        if missing:
            raise InferenceError(f"input tensor {missing[0]!r} of {self.model_path.name} was not given")

    @staticmethod
    def _check_buffer(info: TensorInfo, buffer: npt.NDArray) -> None:
        if buffer.dtype != info.dtype or not buffer.flags.c_contiguous or not buffer.flags.writeable:
            raise InferenceError(
                f"output buffer {info.name!r}: expected a writeable C-contiguous {info.dtype} array, "
                f"got {buffer.dtype} (contiguous: {buffer.flags.c_contiguous})"
            )
        if len(buffer.shape) != len(info.shape) or any(
            dim is not None and dim != size for dim, size in zip(info.shape, buffer.shape)
        ):
            raise InferenceError(
                f"output buffer {info.name!r}: expected shape {_format_shape(info.shape)}, got {list(buffer.shape)}"
            )
