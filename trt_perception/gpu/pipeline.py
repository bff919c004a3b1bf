"""``Pipeline`` with its pre- and post-processing on the GPU, around the same backend and decoder.

With a backend that runs on device arrays (``infer_device``, the TensorRT backend) the frame goes
up once, the network input is written by one kernel into a device buffer that TensorRT reads in
place, and only the labels (or the kept detections, in one packed array) come back. Other backends
(ONNX Runtime) get the tensor as a host copy and return host outputs, which are uploaded for the
GPU segmentation decoders and decoded on the host for detection.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy.typing as npt

from trt_perception.backends import Backend
from trt_perception.decoders import DetectionDecoder, DetectionFilter, filter_detections
from trt_perception.geometry import ResizeGeometry
from trt_perception.gpu._cupy import require_cupy
from trt_perception.gpu.detection import filter_detections_gpu
from trt_perception.gpu.preprocess import GpuPreprocessor
from trt_perception.gpu.segmentation import GpuSegmentationDecoder
from trt_perception.pipeline import STAGES, Pipeline
from trt_perception.results import DetectionResult, Detections, SegmentationResult, StageTimings
from trt_perception.spec import ModelSpec

# From this many candidate boxes on, the filter and NMS run on the GPU. bench/run_bench.py's NMS
# table (H200, host input): ~14 boxes above the threshold are faster on the CPU, ~70 on the GPU.
GPU_NMS_MIN_BOXES = 50


class GpuPipeline:
    """Runs a ``Pipeline``'s model with GPU pre/post-processing; same results as ``pipeline.run``.

    After a segmentation ``run``, ``device_labels`` holds the labels on the GPU and ``device_image``
    / ``image_step`` the frame as received, until the next ``run``: colour masks and overlays
    (``GpuVisualizer``) can be made from them without copying anything up again.

    It offers ``Pipeline``'s public interface (``run``, ``spec``, ``backend``, ``class_names``,
    ``detection_filter``, ``close``), so callers take either from ``create_pipeline``.
    """

    device = "gpu"

    def __init__(self, pipeline: Pipeline) -> None:
        self.cupy = require_cupy()
        self.pipeline = pipeline
        self.preprocessor = GpuPreprocessor(pipeline.spec.input)
        self.segmentation_decoder = (
            GpuSegmentationDecoder(pipeline.decoder) if pipeline.spec.task == "segmentation" else None  # type: ignore[arg-type]
        )
        backend = pipeline.backend
        self._on_device = callable(getattr(backend, "infer_device", None))
        # Enqueue on the backend's stream so TensorRT sees the input without an extra wait.
        self._stream = getattr(backend, "stream", None) if self._on_device else None
        self.device_labels: Any = None
        self.device_image: Any = None
        self.image_step = 0

    @property
    def spec(self) -> ModelSpec:
        """The model spec."""
        return self.pipeline.spec

    @property
    def backend(self) -> Backend:
        """The inference backend."""
        return self.pipeline.backend

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names from the spec's labels (empty when it has none)."""
        return self.pipeline.class_names

    @property
    def detection_filter(self) -> DetectionFilter:
        """``Pipeline.detection_filter`` (settable; detection models only)."""
        return self.pipeline.detection_filter

    @detection_filter.setter
    def detection_filter(self, value: DetectionFilter) -> None:
        self.pipeline.detection_filter = value

    def close(self) -> None:
        """Release the backend."""
        self.pipeline.close()

    def run(self, pixels: npt.NDArray, channel_order: str) -> SegmentationResult | DetectionResult:
        """Labels or detections for one image, as ``Pipeline.run`` returns them."""
        pipeline, cupy = self.pipeline, self.cupy
        timings = StageTimings()
        with self._stream if self._stream is not None else nullcontext():
            start = time.perf_counter()
            tensor, geometry = self.preprocessor(pixels, channel_order)
            cupy.cuda.get_current_stream().synchronize()
            preprocessed = time.perf_counter()
            outputs = self._infer(tensor)
            inferred = time.perf_counter()
            result: SegmentationResult | DetectionResult
            if self.segmentation_decoder is not None:
                at_source = pipeline.spec.output_resolution == "source"
                labels = self.segmentation_decoder.decode(self._on_gpu(outputs), geometry, at_source)
                self.device_labels = labels
                self.device_image, self.image_step = self.preprocessor.last_upload
                result = SegmentationResult(cupy.asnumpy(labels), pipeline.class_names, geometry, timings)
            else:
                result = DetectionResult(self._detections(outputs, geometry), pipeline.class_names, geometry, timings)
            finished = time.perf_counter()
        timings.milliseconds.update(
            zip(STAGES, ((preprocessed - start) * 1e3, (inferred - preprocessed) * 1e3, (finished - inferred) * 1e3))
        )
        return result

    batch_capacity = 1  # ``run_batch`` runs images one after another

    def run_batch(self, images: Sequence[tuple[npt.NDArray, str]]) -> list[SegmentationResult | DetectionResult]:
        """Results for several ``(pixels, channel_order)`` images, one after another on the GPU."""
        return [self.run(pixels, channel_order) for pixels, channel_order in images]

    def _detections(self, outputs: dict[str, Any], geometry: ResizeGeometry) -> Detections:
        """Decode, map to source pixels and filter. Device outputs of a ``device_exact`` decoder stay
        on the GPU throughout and only the kept rows come back (one packed copy); otherwise the
        outputs are decoded on the host and the filter runs on the GPU from ``GPU_NMS_MIN_BOXES`` on."""
        detection_filter = self.pipeline.detection_filter
        decoder = self.pipeline.decoder
        assert isinstance(decoder, DetectionDecoder)
        on_device = self._on_device and decoder.device_exact
        if not on_device:
            outputs = {name: self.cupy.asnumpy(value) for name, value in outputs.items()}
        boxes, scores, class_ids = decoder.decode_arrays(outputs, geometry, detection_filter.score_threshold)
        boxes = geometry.boxes_to_source(boxes)
        if on_device or len(scores) >= GPU_NMS_MIN_BOXES:
            return filter_detections_gpu(boxes, scores, class_ids, detection_filter)
        return filter_detections(Detections(boxes, scores, class_ids), detection_filter)

    def _infer(self, tensor: Any) -> dict[str, Any]:
        pipeline = self.pipeline
        if self._on_device:
            return pipeline.backend.infer_device({pipeline.input_name: tensor})  # type: ignore[attr-defined]
        host = self.cupy.asnumpy(tensor)
        return pipeline.backend.infer({pipeline.input_name: host}, pipeline.outputs_for(host.shape))

    def _on_gpu(self, outputs: dict[str, Any]) -> dict[str, Any]:
        return outputs if self._on_device else {name: self.cupy.asarray(value) for name, value in outputs.items()}
