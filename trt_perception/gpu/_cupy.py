"""Lazy access to CuPy, so that importing the package never needs a GPU."""

from __future__ import annotations

import sys
from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy as np

from trt_perception.errors import GpuUnavailableError


@lru_cache(maxsize=1)
def require_cupy() -> ModuleType:
    """Return the ``cupy`` module, or raise ``GpuUnavailableError`` (an ImportError) saying how to
    get the GPU path working."""
    try:
        import cupy
    except ImportError as error:
        raise GpuUnavailableError(
            "the GPU pre/post-processing path needs CuPy, which is not installed: install the wheel "
            "matching your CUDA (e.g. `pip install cupy-cuda12x`, or `cupy-cuda13x`; on Jetson the "
            "JetPack build) or use the CPU path"
        ) from error
    try:
        device_count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        raise GpuUnavailableError(f"CuPy is installed but no CUDA device is usable: {error}") from error
    if device_count == 0:
        raise GpuUnavailableError("CuPy is installed but no CUDA device is usable: the CUDA runtime reports 0 devices")
    return cupy


def array_module(array: Any) -> ModuleType:
    """``cupy`` for a CuPy array, else ``numpy``: code written against the returned module runs
    unchanged on host and device arrays (CuPy is never imported here)."""
    if type(array).__module__.partition(".")[0] == "cupy" and "cupy" in sys.modules:
        return sys.modules["cupy"]
    return np


def gpu_available() -> bool:
    """Whether CuPy imports and sees a CUDA device."""
    try:
        require_cupy()
    except GpuUnavailableError:
        return False
    return True


def integrated_gpu() -> bool:
    """Whether the current CUDA device shares its memory with the host (Jetson), per CUDA's
    ``integrated`` device property."""
    cupy = require_cupy()
    return bool(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id).get("integrated", 0))
