"""Test double of TensorRT (run by ONNX Runtime) plus a host-memory stand-in for CuPy.

``install(monkeypatch, version)`` puts a fake ``tensorrt`` of that version into ``sys.modules``,
and the CuPy shim too, unless ``TRT_DOUBLE_REAL_CUPY=1`` asks for the real CuPy (GPU machines:
device memory, pinned buffers, streams and copies are then real; only the engine is fake).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest

from trt_perception.spec import ModelSpec
from trt_perception.tensorrt.engine_builder import BuildOptions, build_engine

from . import fake_cupy
from .fake_tensorrt import make_tensorrt, unpack_plan

__all__ = ["build_engine_file", "fake_cupy", "install", "make_tensorrt", "unpack_plan", "uses_real_cupy"]


def uses_real_cupy() -> bool:
    """Whether tests run against real CuPy and a GPU (``TRT_DOUBLE_REAL_CUPY=1``)."""
    return os.environ.get("TRT_DOUBLE_REAL_CUPY") == "1"


def install(monkeypatch: pytest.MonkeyPatch, version: str = "10.3.0") -> types.ModuleType:
    """Make ``import tensorrt`` (and ``import cupy``) give the doubles for this test."""
    trt = make_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("trt_perception.tensorrt.runtime_support._plugins_loaded", False)
    if uses_real_cupy():
        monkeypatch.setitem(sys.modules, "cupy", importlib.import_module("cupy"))
    else:
        fake_cupy.reset()
        monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    return trt


def build_engine_file(
    folder: Path, spec: ModelSpec, options: BuildOptions | None = None, name: str = "model.engine"
) -> Path:
    """Build ``spec``'s ONNX model with the installed double and write the plan to ``folder/name``."""
    assert spec.model is not None
    path = folder / name
    path.write_bytes(build_engine(spec.model, options or BuildOptions(), spec.input))
    return path
