"""Inference backends behind one interface (``base.Backend``), chosen from the model spec."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from trt_perception.backends.base import Backend, TensorInfo
from trt_perception.errors import ModelLoadError, SpecError
from trt_perception.spec import ModelSpec

__all__ = ["Backend", "TensorInfo", "create_backend", "resolve_backend_kind"]


def resolve_backend_kind(spec: ModelSpec, backend: str | None = None) -> str:
    """``onnxruntime`` or ``tensorrt``: ``backend`` (or ``spec.backend``); ``auto`` picks TensorRT
    when a usable TensorRT is installed (an ONNX-only spec then builds its engine through the engine
    cache), else ONNX Runtime."""
    kind = backend or spec.backend
    if kind == "auto":
        kind = "tensorrt" if _tensorrt_usable() else "onnxruntime"
    if kind == "onnxruntime" and spec.model is None:
        raise SpecError("model: the onnxruntime backend needs an ONNX model path (only an engine is given)")
    if kind not in ("onnxruntime", "tensorrt"):
        raise SpecError(f"backend: expected auto, onnxruntime or tensorrt, got {kind!r}")
    return kind


def _tensorrt_usable() -> bool:
    """Whether a real TensorRT >= 8.5 imports (type stubs or placeholders do not count)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    from trt_perception.tensorrt.runtime_support import require_tensorrt

    try:
        require_tensorrt()
    except ModelLoadError:
        return False
    return True


def create_backend(
    spec: ModelSpec,
    backend: str | None = None,
    providers: Sequence[str] | None = None,
    intra_op_threads: int = 0,
) -> Backend:
    """Load the spec's model on the chosen backend (see ``resolve_backend_kind``).

    ``providers`` and ``intra_op_threads`` configure ONNX Runtime, the spec's ``tensorrt`` section
    TensorRT (``cuda_graph``).
    """
    kind = resolve_backend_kind(spec, backend)
    if kind == "tensorrt":
        try:
            from trt_perception.tensorrt.backend import create_tensorrt_backend
        except ImportError as error:
            raise ModelLoadError(f"the TensorRT backend cannot be loaded for {spec.engine or spec.model}: {error}") from error
        return create_tensorrt_backend(spec, cuda_graph=spec.tensorrt.cuda_graph)
    from trt_perception.backends.onnxruntime import OnnxRuntimeBackend

    assert spec.model is not None
    return OnnxRuntimeBackend(spec.model, providers=providers, intra_op_threads=intra_op_threads)
