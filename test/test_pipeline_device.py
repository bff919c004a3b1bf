"""``create_pipeline``: where pre/post-processing runs (cpu | gpu | auto), on a machine with or without CuPy.

CuPy's availability is set per test (``cupy_stand_ins``), so the results do not depend on the
machine the suite runs on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from cupy_stand_ins import cupy_with_device, cupy_without_device, fresh_cupy_check, no_cupy  # noqa: F401 (fixtures)

from trt_perception.errors import GpuUnavailableError, SpecError, TrtPerceptionError
from trt_perception.pipeline import Pipeline
from trt_perception.pipeline_factory import create_pipeline
from trt_perception.spec import load_model_spec

IMAGES = Path(__file__).resolve().parent / "fixtures" / "images"


def missing_model_spec(tmp_path: Path):
    return dataclasses.replace(load_model_spec("selfie_segmentation"), model=tmp_path / "absent.onnx")


def test_gpu_without_cupy_names_cupy_before_loading_the_model(no_cupy: None, tmp_path: Path) -> None:
    with pytest.raises(GpuUnavailableError, match="needs CuPy, which is not installed.*pip install cupy-cuda12x"):
        create_pipeline(missing_model_spec(tmp_path), device="gpu")


def test_gpu_without_cuda_device_names_the_device(cupy_without_device: None, tmp_path: Path) -> None:
    with pytest.raises(GpuUnavailableError, match="no CUDA device is usable: cudaErrorNoDevice") as raised:
        create_pipeline(missing_model_spec(tmp_path), device="gpu")
    assert isinstance(raised.value, TrtPerceptionError)  # reported like other errors by the CLI and nodes


@pytest.mark.usefixtures("cupy_without_device")
def test_auto_falls_back_to_the_cpu_pipeline() -> None:
    pipeline = create_pipeline("selfie_segmentation", device="auto")
    assert type(pipeline) is Pipeline and pipeline.device == "cpu"
    pipeline.close()


@pytest.mark.usefixtures("cupy_with_device")
def test_a_spec_without_a_gpu_version_runs_on_the_cpu_under_auto_and_is_refused_under_gpu() -> None:
    """PP-OCR text regions as a label image (segmentation decoder db_text) have no GPU decoder: on a
    machine with a CUDA device, auto serves the spec on the CPU and gpu says why it cannot, in one line,
    instead of a ValueError from inside the GPU pipeline."""
    bundled = load_model_spec("ppocrv4_det")
    spec = dataclasses.replace(bundled, decoder={"type": "db_text", "output": bundled.decoder["output"]})
    pipeline = create_pipeline(spec, device="auto")
    assert type(pipeline) is Pipeline and pipeline.device == "cpu"
    text = pipeline.run(cv2.imread(str(IMAGES / "page.png")), "BGR").labels
    assert set(np.unique(text)) == {0, 1}  # text regions found, by the CPU decoder
    pipeline.close()
    with pytest.raises(SpecError, match="^device gpu: decoder type db_text has no GPU version .device auto runs"):
        create_pipeline(spec, device="gpu")


def test_unknown_device_is_rejected() -> None:
    with pytest.raises(ValueError, match="device: expected one of cpu, gpu, auto, got 'tpu'"):
        create_pipeline("selfie_segmentation", device="tpu")


def test_cpu_device_is_pipeline_from_spec() -> None:
    frame = cv2.imread(str(IMAGES / "coffee.png"))
    created = create_pipeline("centernet_mobilenetv3_coco", backend_kind="onnxruntime", device="cpu")
    reference = Pipeline.from_spec("centernet_mobilenetv3_coco", backend_kind="onnxruntime")
    assert type(created) is Pipeline
    assert created.spec == reference.spec and created.detection_filter == reference.detection_filter
    got, expected = created.run(frame, "BGR").detections, reference.run(frame, "BGR").detections
    assert len(expected) > 0
    np.testing.assert_array_equal(got.boxes, expected.boxes)
    np.testing.assert_array_equal(got.scores, expected.scores)
    np.testing.assert_array_equal(got.class_ids, expected.class_ids)
    created.close()
    reference.close()


def test_gpu_pipeline_exposes_the_pipeline_interface_callers_use() -> None:
    """``GpuPipeline`` forwards spec, backend, class names, the settable detection filter and close."""
    from trt_perception.gpu.pipeline import GpuPipeline

    pipeline = Pipeline.from_spec("centernet_mobilenetv3_coco", backend_kind="onnxruntime")
    gpu_pipeline = GpuPipeline.__new__(GpuPipeline)  # the CuPy parts are not needed for the interface
    gpu_pipeline.pipeline = pipeline
    assert gpu_pipeline.spec is pipeline.spec and gpu_pipeline.backend is pipeline.backend
    assert gpu_pipeline.class_names == pipeline.class_names and len(pipeline.class_names) == 80
    stricter = dataclasses.replace(gpu_pipeline.detection_filter, score_threshold=0.9)
    gpu_pipeline.detection_filter = stricter
    assert pipeline.detection_filter == stricter
    with pytest.raises(TypeError, match="must be a DetectionFilter"):
        gpu_pipeline.detection_filter = 0.5  # type: ignore[assignment]
    assert gpu_pipeline.device == "gpu"
    closed = []
    pipeline.backend.close = lambda: closed.append(True)  # type: ignore[method-assign]
    gpu_pipeline.close()
    assert closed == [True]
