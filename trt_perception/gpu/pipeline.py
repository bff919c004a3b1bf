"""``Pipeline`` with its pre- and post-processing on the GPU, around the same backend and decoder.

With a backend that runs on device arrays (``infer_device``, the TensorRT backend) the frame goes
up once, the network input is written by one kernel into a device buffer that TensorRT reads in
place, and only the labels (or the kept detections, in one packed array) come back. Other backends
(ONNX Runtime) get the tensor as a host copy and return host outputs, which are uploaded for the
GPU segmentation decoders and decoded on the host for detection.

Segmentation models with score outputs run through ``SegmentationFramePath``: upload and
preprocessing, then decoding, colour mask and overlay (``visuals``) and one download, each a CUDA
graph replayed per frame shape.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trt_perception.backends import Backend
from trt_perception.decoders import DetectionDecoder, DetectionFilter, filter_detections
from trt_perception.decoders.segmentation import LabelsDecoder
from trt_perception.geometry import ResizeGeometry
from trt_perception.gpu._cupy import integrated_gpu, require_cupy
from trt_perception.gpu.detection import filter_detections_gpu
from trt_perception.gpu.frame_path import PublishedFrame, SegmentationFramePath
from trt_perception.gpu.preprocess import GpuPreprocessor
from trt_perception.gpu.segmentation import GPU_DECODERS, GpuSegmentationDecoder
from trt_perception.pipeline import STAGES, Pipeline, check_batch_outputs, filtered_in_source
from trt_perception.results import DetectionResult, Detections, SegmentationResult, StageTimings
from trt_perception.spec import ModelSpec
from trt_perception.visualize import make_palette

# From this many candidate boxes on, the filter and NMS run on the GPU. bench/run_bench.py's NMS
# table (H200, host input): ~14 boxes above the threshold are faster on the CPU, ~70 on the GPU.
GPU_NMS_MIN_BOXES = 50


def missing_gpu_version(pipeline: Pipeline) -> str | None:
    """What of ``pipeline``'s spec has no GPU version here, so that ``GpuPipeline`` cannot run it (None
    when it can)."""
    if pipeline.spec.task == "segmentation" and not isinstance(pipeline.decoder, GPU_DECODERS):
        return f"decoder type {pipeline.spec.decoder.get('type')} has no GPU version"
    return None


@dataclass(frozen=True)
class Visuals:
    """Which pictures a segmentation ``run`` also makes on the device (``GpuPipeline.visuals``)."""

    color_mask: bool = False
    overlay: bool = False
    overlay_alpha: float = 0.5


class GpuPipeline:
    """Runs a ``Pipeline``'s model with GPU pre/post-processing; same results as ``pipeline.run``.

    After a segmentation ``run``, ``device_labels`` holds the labels on the GPU and ``device_image``
    / ``image_step`` the frame as received, until the next ``run``: colour masks and overlays
    (``GpuVisualizer``) can be made from them without copying anything up again. With ``visuals``
    set, the frame path draws the colour mask and overlay in the same kernel as the labels and
    ``published`` holds them (RGB, views valid until the next ``run``). ``reuse_outputs`` makes
    ``run`` return the labels as such a view too, instead of a copy (for callers that are done
    with a result before the next frame, like the nodes). ``mapped`` picks the zero-copy buffers of
    devices whose host and GPU share memory (default: when the GPU is an integrated one, as on Jetson).

    It offers ``Pipeline``'s public interface (``run``, ``spec``, ``backend``, ``class_names``,
    ``detection_filter``, ``close``), so callers take either from ``create_pipeline``.
    """

    device = "gpu"

    def __init__(self, pipeline: Pipeline, mapped: bool | None = None) -> None:
        self.cupy = require_cupy()
        self.pipeline = pipeline
        capacity = pipeline.batch_capacity
        # a model with a fixed batch N > 1 gets each image in a zero-filled batch of N, as Pipeline.run does
        self._fixed_batch = capacity if capacity is not None and capacity > 1 else None
        self._batch: Any = None  # the device batch the network reads (fixed batch only)
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
        self.visuals = Visuals()
        self.reuse_outputs = False
        self.published: PublishedFrame | None = None
        self.frame_path = (
            SegmentationFramePath(
                self.preprocessor, self.segmentation_decoder,
                make_palette(pipeline.spec.palette, len(pipeline.class_names)),
                integrated_gpu() if mapped is None else mapped, self._stream,
            )
            # the frame path's graphs preprocess on the device: not for specs only the CPU preprocessor
            # serves (``preprocess.cpu_only_input_options``), which take the per-step path's host fallback
            if self.segmentation_decoder is not None and not isinstance(pipeline.decoder, LabelsDecoder)
            and not self.preprocessor.host_fallback
            else None
        )
        self._device_outputs: dict[str, Any] = {}  # host backends' outputs, uploaded to fixed buffers

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
        if self.frame_path is not None:
            return self._run_frame_path(pixels, channel_order)
        pipeline, cupy = self.pipeline, self.cupy
        timings = StageTimings()
        with self._stream if self._stream is not None else nullcontext():
            start = time.perf_counter()
            tensor, geometry = self.preprocessor(pixels, channel_order)
            cupy.cuda.get_current_stream().synchronize()
            preprocessed = time.perf_counter()
            outputs = self._infer(self._in_batch(tensor))
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

    def _run_frame_path(self, pixels: npt.NDArray, channel_order: str) -> SegmentationResult:
        """A segmentation frame through the frame path's graphs (preprocess timing: enqueue only
        when the network runs on the device, whose time then includes it)."""
        path, pipeline, visuals = self.frame_path, self.pipeline, self.visuals
        assert path is not None
        start = time.perf_counter()
        tensor, geometry = path.upload(pixels, channel_order)
        with path.stream:
            tensor = self._in_batch(tensor)
        if self._on_device:
            preprocessed = time.perf_counter()
            outputs = self._first_item(pipeline.backend.infer_device({pipeline.input_name: tensor}))  # type: ignore[attr-defined]
        else:
            host = tensor.get(stream=path.stream)
            preprocessed = time.perf_counter()
            outputs = self._upload_outputs(
                self._first_item(pipeline.backend.infer({pipeline.input_name: host}, pipeline.outputs_for(host.shape))), path.stream
            )
        inferred = time.perf_counter()
        published = path.publish(
            outputs, geometry, pipeline.spec.output_resolution == "source", visuals.color_mask, visuals.overlay,
            visuals.overlay_alpha, channel_order,
        )
        self.published = published
        self.device_image, self.image_step = path.last_image
        labels = published.labels if self.reuse_outputs else published.labels.copy()
        self.device_labels = published.device_labels
        finished = time.perf_counter()
        timings = StageTimings(dict(zip(STAGES, ((preprocessed - start) * 1e3, (inferred - preprocessed) * 1e3, (finished - inferred) * 1e3))))
        return SegmentationResult(labels, pipeline.class_names, geometry, timings)

    def _upload_outputs(self, outputs: dict[str, npt.NDArray], stream: Any) -> dict[str, Any]:
        """Host outputs copied into device buffers that stay put while their shapes do (the frame
        path's graphs read them by address); float64 scores as float32, as the GPU decoders take them."""
        uploaded = {}
        for name, value in outputs.items():
            value = np.ascontiguousarray(value, np.float32 if value.dtype == np.float64 else None)
            buffer = self._device_outputs.get(name)
            if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
                buffer = self._device_outputs[name] = self.cupy.empty(value.shape, value.dtype)
            buffer.set(value, stream=stream)
            uploaded[name] = buffer
        return uploaded

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

        def keep(boxes: Any, scores: Any, class_ids: Any) -> Detections:
            if on_device or len(scores) >= GPU_NMS_MIN_BOXES:
                return filter_detections_gpu(boxes, scores, class_ids, detection_filter)
            return filter_detections(Detections(boxes, scores, class_ids), detection_filter)

        return filtered_in_source(decoder, geometry, boxes, scores, class_ids, keep)

    def _infer(self, tensor: Any) -> dict[str, Any]:
        pipeline = self.pipeline
        if self._on_device:
            return self._first_item(pipeline.backend.infer_device({pipeline.input_name: tensor}))  # type: ignore[attr-defined]
        host = self.cupy.asnumpy(tensor)
        return self._first_item(pipeline.backend.infer({pipeline.input_name: host}, pipeline.outputs_for(host.shape)))

    def _in_batch(self, tensor: Any) -> Any:
        """The network input for one image: ``tensor`` itself, or for a fixed batch N > 1 a zero-filled
        device batch of N holding it first (enqueued on the current stream; the batch is reused while
        the input shape stays, its other entries stay zero)."""
        if self._fixed_batch is None:
            return tensor
        shape = (self._fixed_batch, *tensor.shape[1:])
        if self._batch is None or self._batch.shape != shape or self._batch.dtype != tensor.dtype:
            self._batch = self.cupy.zeros(shape, tensor.dtype)
        self._batch[:1] = tensor
        return self._batch

    def _first_item(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """For a fixed batch, each output's first entry (the image's; a view); others as they are."""
        if self._fixed_batch is None:
            return outputs
        check_batch_outputs(outputs, self._fixed_batch, self.pipeline.spec.name)
        return {name: value[:1] for name, value in outputs.items()}

    def _on_gpu(self, outputs: dict[str, Any]) -> dict[str, Any]:
        return outputs if self._on_device else {name: self.cupy.asarray(value) for name, value in outputs.items()}
