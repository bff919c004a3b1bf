"""Fixtures that fix CuPy's availability for one test, whatever the machine has: ``no_cupy``
(``import cupy`` fails), ``cupy_without_device`` (CuPy imports, its CUDA runtime sees no device) and
``cupy_with_device`` (its runtime counts one device; nothing else of CuPy is there).
Import them into a test module to use them."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from trt_perception.gpu import require_cupy


@pytest.fixture
def fresh_cupy_check() -> Iterator[None]:
    """``require_cupy`` looks again (its cached module is dropped) before and after the test."""
    require_cupy.cache_clear()
    yield
    require_cupy.cache_clear()


@pytest.fixture
def no_cupy(monkeypatch: pytest.MonkeyPatch, fresh_cupy_check: None) -> None:
    """``import cupy`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "cupy", None)


def cupy_module(device_count: object) -> types.ModuleType:
    """A ``cupy`` module with nothing but ``cuda.runtime.getDeviceCount`` (``device_count``) and its error type."""

    class CUDARuntimeError(RuntimeError):
        pass

    runtime = types.SimpleNamespace(CUDARuntimeError=CUDARuntimeError, getDeviceCount=device_count)
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=runtime)  # type: ignore[attr-defined]
    return cupy


@pytest.fixture
def cupy_with_device(monkeypatch: pytest.MonkeyPatch, fresh_cupy_check: None) -> None:
    """A ``cupy`` whose ``cuda.runtime.getDeviceCount`` says 1: ``create_pipeline`` takes the GPU route
    as far as choosing it."""
    monkeypatch.setitem(sys.modules, "cupy", cupy_module(lambda: 1))


@pytest.fixture
def cupy_without_device(monkeypatch: pytest.MonkeyPatch, fresh_cupy_check: None) -> None:
    """A ``cupy`` whose ``cuda.runtime.getDeviceCount`` raises as CuPy does on a machine without a GPU."""

    def no_device() -> int:
        raise cupy.cuda.runtime.CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    cupy = cupy_module(no_device)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
