"""What the TensorRT backend, engine builder, engine cache and INT8 calibrator share.

Importing TensorRT and CuPy (only when called, so the rest of the package works without them), the
TensorRT version and the GPU an engine is specific to, a logger that keeps TensorRT's warnings for
error messages, the standard plugins, and ``Dims`` as tuples. Imports no other module of
``trt_perception.tensorrt``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from trt_perception.errors import ModelLoadError

if TYPE_CHECKING:
    import tensorrt as trt

LOG = logging.getLogger(__name__)

MINIMUM_TENSORRT = (8, 5)

Shape = tuple[int, ...]


class EngineBuildError(ModelLoadError):
    """An engine could not be built; the message names the option, node or TensorRT's reason."""


# --------------------------------------------------------------------------- imports


def require_tensorrt() -> tuple[int, int]:
    """Check that a usable TensorRT (>= 8.5) is importable and return its ``(major, minor)``."""
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as error:
        raise ModelLoadError(
            f"TensorRT's Python package cannot be imported ({error}). On Jetson it comes with JetPack "
            "(apt package python3-libnvinfer); on x86_64 install the TensorRT wheel matching your CUDA. "
            "Use backend: onnxruntime meanwhile."
        ) from error
    if not hasattr(module, "Runtime"):
        raise ModelLoadError(
            f"the 'tensorrt' module found at {list(getattr(module, '__path__', []))} is not TensorRT "
            "(only type stubs such as tensorrt-stubs, or a placeholder package, are installed)"
        )
    version = version_tuple(module.__version__)
    if version < MINIMUM_TENSORRT:
        raise ModelLoadError(
            f"TensorRT {module.__version__} is too old: the named-tensor API needs TensorRT "
            f"{MINIMUM_TENSORRT[0]}.{MINIMUM_TENSORRT[1]} or newer"
        )
    return version


def import_cupy() -> ModuleType:
    """CuPy, which provides device memory, pinned host memory and CUDA streams to this backend."""
    try:
        return importlib.import_module("cupy")
    except ImportError as error:
        raise ModelLoadError(
            f"the TensorRT backend needs CuPy for GPU memory and streams, but it cannot be imported "
            f"({error}); install the wheel matching your CUDA, e.g. pip install cupy-cuda12x "
            "(JetPack 6) or cupy-cuda11x (JetPack 5)"
        ) from error


def version_tuple(text: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``"10.3.0.26"``."""
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as error:
        raise ModelLoadError(f"cannot read TensorRT version {text!r}") from error


@dataclass(frozen=True)
class GpuIdentity:
    """What a TensorRT engine is specific to: the GPU model and its compute capability."""

    name: str
    compute_capability: str  # "8.7"


def current_gpu() -> GpuIdentity:
    """The current CUDA device, as CuPy reports it."""
    cupy = import_cupy()
    device = cupy.cuda.runtime.getDevice()
    props = cupy.cuda.runtime.getDeviceProperties(device)
    name = props["name"]
    return GpuIdentity(name.decode() if isinstance(name, bytes) else str(name), f"{props['major']}.{props['minor']}")


# --------------------------------------------------------------------------- logging


class TensorRTMessages:
    """Warnings and errors TensorRT logged, kept so that failures can say why."""

    def __init__(self) -> None:
        self.recent: list[str] = []

    def add(self, message: str) -> None:
        self.recent = [*self.recent[-19:], message]

    def take(self) -> str:
        """Everything logged since the last call, as one string (empty when nothing)."""
        text, self.recent = " | ".join(self.recent), []
        return text


def make_logger(messages: TensorRTMessages) -> trt.ILogger:
    """A TensorRT logger that forwards to Python logging and keeps warnings and errors."""
    import tensorrt as trt

    warning = int(trt.ILogger.Severity.WARNING)
    error = int(trt.ILogger.Severity.ERROR)

    class ForwardingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            level = int(severity)
            if level <= warning:
                messages.add(msg)
            LOG.log(
                logging.ERROR if level <= error else logging.WARNING if level == warning else logging.DEBUG,
                "TensorRT: %s",
                msg,
            )

    return ForwardingLogger()


_plugins_loaded = False
_plugin_logger: trt.ILogger | None = None  # TensorRT keeps using it: it must live as long as the process


def load_standard_plugins(logger: trt.ILogger) -> None:
    """Register TensorRT's standard plugins (EfficientNMS, ...) once per process."""
    import tensorrt as trt

    global _plugins_loaded, _plugin_logger
    if not _plugins_loaded:
        if not trt.init_libnvinfer_plugins(logger, ""):
            raise ModelLoadError("TensorRT could not register its standard plugins (init_libnvinfer_plugins)")
        _plugins_loaded, _plugin_logger = True, logger


# --------------------------------------------------------------------------- shapes


def shape_of(dims: trt.Dims) -> Shape:
    """A TensorRT ``Dims`` as a tuple of ints (``-1`` marks a dynamic dimension)."""
    return tuple(int(dim) for dim in dims[:])
