"""Fixtures that fix CuPy's availability for one test, whatever the machine has: ``no_cupy``
(``import cupy`` fails) and ``cupy_without_device`` (CuPy imports, its CUDA runtime sees no device).
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


@pytest.fixture
def cupy_without_device(monkeypatch: pytest.MonkeyPatch, fresh_cupy_check: None) -> None:
    """A ``cupy`` whose ``cuda.runtime.getDeviceCount`` raises as CuPy does on a machine without a GPU."""

    class CUDARuntimeError(RuntimeError):
        pass

    def no_device() -> int:
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    runtime = types.SimpleNamespace(CUDARuntimeError=CUDARuntimeError, getDeviceCount=no_device)
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=runtime)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", cupy)
