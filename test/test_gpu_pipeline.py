"""GpuPipeline end to end against Pipeline on the real models (needs CuPy and a CUDA device).

Also runs it over the TensorRT backend (the repo's TensorRT double executing the ONNX model, with
real CuPy device buffers), where the preprocessed tensor is bound in place and the outputs stay
on the device.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from trt_perception.gpu import gpu_available
from trt_perception.pipeline import Pipeline
from trt_perception.spec import load_model_spec

pytestmark = pytest.mark.skipif(not gpu_available(), reason="CuPy with a CUDA device is not available (CPU-only machine)")

IMAGES = Path(__file__).parent / "fixtures" / "images"
CASES = [("selfie_segmentation", "astronaut.png"), ("ppocrv4_det", "page.png"), ("centernet_mobilenetv3_coco", "coffee.png")]


def bgr_frame(name: str, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    return cv2.resize(cv2.imread(str(IMAGES / name)), (size[1], size[0]), interpolation=cv2.INTER_AREA)


def assert_same_result(actual, expected) -> None:
    if hasattr(expected, "labels"):
        np.testing.assert_array_equal(actual.labels, expected.labels)
    else:
        np.testing.assert_array_equal(actual.detections.boxes, expected.detections.boxes)
        np.testing.assert_array_equal(actual.detections.class_ids, expected.detections.class_ids)
        assert len(expected.detections) > 0
    assert actual.geometry == expected.geometry
    assert set(actual.timings.milliseconds) == {"preprocess", "inference", "postprocess"}


@pytest.mark.parametrize(("model", "image"), CASES)
def test_gpu_pipeline_equals_cpu_pipeline(model: str, image: str) -> None:
    from trt_perception.gpu.pipeline import GpuPipeline

    pipeline = Pipeline.from_spec(model)
    gpu_pipeline = GpuPipeline(pipeline)
    for size in [(480, 640), (1080, 1920)]:
        frame = bgr_frame(image, size)
        result = gpu_pipeline.run(frame, "BGR")
        assert_same_result(result, pipeline.run(frame, "BGR"))
        if hasattr(result, "labels"):  # the device copies kept for colour masks and overlays
            np.testing.assert_array_equal(gpu_pipeline.device_labels.get(), result.labels)
            uploaded, step = gpu_pipeline.device_image.get(), gpu_pipeline.image_step
            np.testing.assert_array_equal(uploaded.reshape(frame.shape[0], step)[:, : frame.shape[1] * 3].reshape(frame.shape), frame)
    pipeline.close()


@pytest.mark.parametrize("nms_on_gpu_from", [50, 1])
def test_gpu_pipeline_runs_nms_on_unclipped_yolo_boxes_as_the_cpu_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nms_on_gpu_from: int
) -> None:
    """Boxes across the image edge (test_family_specs.EDGE_BOXES): NMS as predicted, then clipped,
    with the filter on the host and on the device."""
    import trt_perception.gpu.pipeline as gpu_pipeline_module
    from test_family_specs import edge_boxes_yolov8_spec
    from trt_perception.gpu.pipeline import GpuPipeline

    monkeypatch.setattr(gpu_pipeline_module, "GPU_NMS_MIN_BOXES", nms_on_gpu_from)
    pipeline = Pipeline.from_spec(edge_boxes_yolov8_spec(tmp_path))
    frame = np.full((720, 1280, 3), 90, np.uint8)
    expected = pipeline.run(frame, "RGB")
    assert len(expected.detections) == 3  # the CPU pipeline's own test holds it against OpenCV's NMS
    assert_same_result(GpuPipeline(pipeline).run(frame, "RGB"), expected)
    pipeline.close()


@pytest.mark.parametrize(("model", "image"), [("selfie_segmentation", "astronaut.png"), ("centernet_mobilenetv3_coco", "coffee.png")])
def test_gpu_pipeline_over_tensorrt_keeps_tensors_on_the_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, image: str
) -> None:
    """Segmentation labels, or detections decoded and filtered on the device, equal the CPU pipeline's."""
    from tensorrt_double import build_engine_file, install

    from trt_perception.tensorrt.backend import TensorRTBackend
    from trt_perception.gpu.pipeline import GpuPipeline

    spec = load_model_spec(model)
    reference = Pipeline.from_spec(spec, backend_kind="onnxruntime")
    monkeypatch.setenv("TRT_DOUBLE_REAL_CUPY", "1")
    install(monkeypatch)
    backend = TensorRTBackend(build_engine_file(tmp_path, spec))
    gpu_pipeline = GpuPipeline(Pipeline(spec, backend))
    frame = bgr_frame(image, (720, 1280))
    assert_same_result(gpu_pipeline.run(frame, "BGR"), reference.run(frame, "BGR"))
    backend.close()
    reference.close()


@pytest.mark.parametrize("sampling", ["asymmetric", "half_pixel"], ids=["host_fallback", "frame_path"])
@pytest.mark.parametrize("backend_kind", ["onnxruntime", "tensorrt"])
def test_gpu_pipeline_runs_a_fixed_batch_model_in_a_zero_filled_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sampling: str, backend_kind: str
) -> None:
    """A model whose batch is fixed at 2 (test/batch_models.py) gives each image the labels the batch-1
    model gives it on the CPU, through the per-step path (the bundled spec's corner sampling) and the
    frame path (half-pixel), on a host backend and on the device (the TensorRT double)."""
    from batch_models import batched_selfie_model

    from trt_perception.gpu.pipeline import GpuPipeline

    bundled = load_model_spec("selfie_segmentation")
    spec = dataclasses.replace(bundled, input=dataclasses.replace(bundled.input, sampling=sampling))
    batched = dataclasses.replace(spec, model=batched_selfie_model(tmp_path / "selfie_batch2.onnx", 2))
    reference = Pipeline.from_spec(spec, backend_kind="onnxruntime")
    if backend_kind == "tensorrt":
        from tensorrt_double import build_engine_file, install

        from trt_perception.tensorrt.backend import TensorRTBackend

        monkeypatch.setenv("TRT_DOUBLE_REAL_CUPY", "1")
        install(monkeypatch)
        pipeline = Pipeline(batched, TensorRTBackend(build_engine_file(tmp_path, batched)))
    else:
        pipeline = Pipeline.from_spec(batched)
    assert pipeline.batch_capacity == 2
    gpu_pipeline = GpuPipeline(pipeline)
    assert (gpu_pipeline.frame_path is not None) == (sampling == "half_pixel")
    try:
        for image, size in [("astronaut.png", (480, 640)), ("coffee.png", (720, 1280)), ("astronaut.png", (480, 640))]:
            frame = bgr_frame(image, size)
            result, expected = gpu_pipeline.run(frame, "BGR"), reference.run(frame, "BGR")
            assert_same_result(result, expected)
            assert 0.02 < expected.labels.mean() < 0.98  # a person and background
    finally:
        gpu_pipeline.close()
        reference.close()
