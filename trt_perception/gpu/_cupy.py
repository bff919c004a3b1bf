"""Lazy access to CuPy, so that importing the package never needs a GPU."""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType


@lru_cache(maxsize=1)
def require_cupy() -> ModuleType:
    """Return the ``cupy`` module, or raise ImportError saying how to get the GPU path working."""
    try:
        import cupy
    except ImportError as error:
        raise ImportError(
            "the GPU pre/post-processing path needs CuPy, which is not installed: install the wheel "
            "matching your CUDA (e.g. `pip install cupy-cuda12x`, or `cupy-cuda13x`; on Jetson the "
            "JetPack build) or use the CPU path"
        ) from error
    try:
        cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        raise ImportError(f"CuPy is installed but no CUDA device is usable: {error}") from error
    return cupy


def gpu_available() -> bool:
    """Whether CuPy imports and sees a CUDA device."""
    try:
        require_cupy()
    except ImportError:
        return False
    return True
