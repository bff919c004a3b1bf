"""Choosing where a pipeline's pre- and post-processing run: the CPU ``Pipeline`` or the CuPy
``GpuPipeline`` around it (above both, so ``pipeline`` never imports ``gpu``). The GPU modules are
imported only when a GPU pipeline is asked for."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trt_perception.backends import Backend
from trt_perception.errors import SpecError
from trt_perception.pipeline import Pipeline
from trt_perception.spec import ModelSpec

if TYPE_CHECKING:
    from trt_perception.gpu.pipeline import GpuPipeline

DEVICES = ("cpu", "gpu", "auto")


def create_pipeline(
    spec: ModelSpec | str | Path,
    backend: Backend | None = None,
    backend_kind: str | None = None,
    intra_op_threads: int = 0,
    device: str = "cpu",
) -> Pipeline | GpuPipeline:
    """A pipeline with its pre/post-processing on ``device``: ``cpu`` (``Pipeline``), ``gpu``
    (``GpuPipeline``, CuPy; raises ``GpuUnavailableError`` naming what is missing before the model
    loads) or ``auto`` (``gpu`` when CuPy sees a CUDA device and the spec has a GPU version, else
    ``cpu``). A spec without a GPU version (``gpu.pipeline.missing_gpu_version``) under ``gpu`` raises
    ``SpecError``. The other arguments are those of ``Pipeline.from_spec``."""
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {', '.join(DEVICES)}, got {device!r}")
    if device != "cpu":
        from trt_perception.gpu import gpu_available, require_cupy

        if device == "gpu":
            require_cupy()
        elif not gpu_available():
            device = "cpu"
    pipeline = Pipeline.from_spec(spec, backend, backend_kind, intra_op_threads=intra_op_threads)
    if device == "cpu":
        return pipeline
    from trt_perception.gpu.pipeline import GpuPipeline, missing_gpu_version

    missing = missing_gpu_version(pipeline)
    if missing is not None:
        if device == "auto":
            return pipeline
        pipeline.close()
        raise SpecError(f"device gpu: {missing} (device auto runs this spec on the CPU)")
    try:
        return GpuPipeline(pipeline)
    except BaseException:
        pipeline.close()
        raise
