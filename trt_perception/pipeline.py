"""One model, end to end: source image -> preprocess -> backend -> decoder -> result in source pixels."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trt_perception.backends import Backend, create_backend
from trt_perception.decoders import DetectionDecoder, DetectionFilter, SegmentationDecoder, create_decoder, filter_detections
from trt_perception.errors import InferenceError, SpecError
from trt_perception.geometry import ResizeGeometry
from trt_perception.preprocess import Preprocessor, dynamic_network_size
from trt_perception.results import DetectionResult, Detections, SegmentationResult, StageTimings
from trt_perception.spec import DynamicSize, ModelSpec, load_model_spec

STAGES = ("preprocess", "inference", "postprocess")
# Camera sizes (height, width) a dynamic input.size rule is tried on at load against a model input
# of fixed height or width: VGA, 720p, 1080p (landscape: a model of fixed height and dynamic width
# takes a short-side rule for those, and no rule for portrait cameras).
CHECKED_CAMERA_SIZES = ((480, 640), (720, 1280), (1080, 1920))


def check_batch_outputs(outputs: Mapping[str, Any], batch_size: int, model: str) -> None:
    """Raise InferenceError unless every output has one entry per batch item (numpy or cupy arrays)."""
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != batch_size:
            raise InferenceError(
                f"output {name!r} of {model} has shape {list(array.shape)}, not one entry per batch "
                f"item ({batch_size}); this model cannot run images as a batch"
            )


def detection_filter_from_spec(spec: ModelSpec) -> DetectionFilter:
    """The spec's ``detection`` section as a filter; class names in ``classes`` become indices."""
    section = spec.detection
    allowed = None
    if section.classes is not None:
        labels = spec.labels or ()
        allowed = set()
        for item in section.classes:
            if isinstance(item, str):
                if item not in labels:
                    raise SpecError(f"detection.classes: unknown class name {item!r} (not in labels)")
                allowed.add(labels.index(item))
            else:
                if spec.labels is not None and item >= len(spec.labels):
                    raise SpecError(
                        f"detection.classes: class index {item} is beyond the {len(spec.labels)} labels "
                        f"(indices 0..{len(spec.labels) - 1}), so it could never be detected"
                    )
                allowed.add(item)
    return DetectionFilter(
        score_threshold=section.score_threshold,
        nms_iou=section.nms_iou,
        class_agnostic=section.class_agnostic,
        max_detections=section.max_detections,
        allowed_class_ids=frozenset(allowed) if allowed is not None else None,
    )


def source_detections(
    decoder: DetectionDecoder, outputs: Mapping[str, npt.NDArray], geometry: ResizeGeometry,
    detection_filter: DetectionFilter,
) -> Detections:
    """One image's detections in source pixels: decoded, then ``filtered_in_source``."""
    network = decoder.decode(outputs, geometry, detection_filter.score_threshold)
    return filtered_in_source(
        decoder, geometry, network.boxes, network.scores, network.class_ids,
        lambda boxes, scores, class_ids: filter_detections(Detections(boxes, scores, class_ids), detection_filter),
    )


DetectionKeeper = Callable[[Any, Any, Any], Detections]


def filtered_in_source(
    decoder: DetectionDecoder, geometry: ResizeGeometry, boxes: Any, scores: Any, class_ids: Any, keep: DetectionKeeper,
) -> Detections:
    """Network-pixel detections mapped to source pixels, filtered by ``keep(boxes, scores, class_ids)``
    (score, classes, NMS, count; on the host or the GPU) and clipped to the image, NMS before the
    clipping where the decoder's family does it so (``DetectionDecoder.nms_on_unclipped_boxes``)."""
    unclipped = decoder.nms_on_unclipped_boxes
    kept = keep(geometry.boxes_to_source(boxes, clip=not unclipped), scores, class_ids)
    return Detections(geometry.clip_to_source(kept.boxes), kept.scores, kept.class_ids) if unclipped else kept


class Pipeline:
    """Runs one model on single images (``run``) or several at once (``run_batch``) and returns results
    in source-image pixels.

    Input and output buffers are reused from frame to frame, so one pipeline serves one thread.
    """

    device = "cpu"  # where pre/post-processing runs (``GpuPipeline`` says "gpu")

    def __init__(self, spec: ModelSpec, backend: Backend) -> None:
        self.spec = spec
        self.backend = backend
        try:  # spec errors found against the model (or in a changed spec) name the spec file too
            self.input_name = self._input_name()
            self._check_input_tensor()
            # images one inference takes: the model input's fixed batch size, or None when it is dynamic
            self.batch_capacity: int | None = next(
                info for info in self.backend.inputs if info.name == self.input_name
            ).shape[0]
            self.decoder = create_decoder(spec.task, spec.decoder, spec.num_classes, spec.base_dir)
            self._check_output_tensors()
            self._detection_filter = detection_filter_from_spec(spec) if spec.task == "detection" else None
        except SpecError as error:
            if spec.source is None or str(error).startswith(f"{spec.source}:"):
                raise
            raise SpecError(f"{spec.source}: {error}") from error
        self.preprocessor = Preprocessor(spec.input)
        self.class_names: tuple[str, ...] = spec.labels or ()
        self._output_buffers: dict[str, npt.NDArray] = {}
        self._buffers_for_shape: tuple[int, ...] | None = None
        self._batch: npt.NDArray | None = None

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec | str | Path,
        backend: Backend | None = None,
        backend_kind: str | None = None,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
    ) -> Pipeline:
        """Build from a spec (object, file or bundled name), loading the backend unless given."""
        model_spec = spec if isinstance(spec, ModelSpec) else load_model_spec(spec)
        if backend is None:
            backend = create_backend(model_spec, backend_kind, providers, intra_op_threads)
        return cls(model_spec, backend)

    @property
    def detection_filter(self) -> DetectionFilter:
        """Score threshold, NMS, limits and class allow-list applied to detections (settable)."""
        if self._detection_filter is None:
            raise AttributeError(f"model {self.spec.name} is a {self.spec.task} model; it has no detection filter")
        return self._detection_filter

    @detection_filter.setter
    def detection_filter(self, value: DetectionFilter) -> None:
        if self._detection_filter is None:
            raise AttributeError(f"model {self.spec.name} is a {self.spec.task} model; it has no detection filter")
        if not isinstance(value, DetectionFilter):
            raise TypeError(f"detection_filter must be a DetectionFilter, got {type(value).__name__}")
        self._detection_filter = value

    def run(self, pixels: npt.NDArray, channel_order: str) -> SegmentationResult | DetectionResult:
        """Labels or detections for one image (HxWxC, channel order RGB/BGR/RGBA/BGRA/MONO); a model
        with a fixed batch size above 1 gets it in a zero-filled batch."""
        capacity = self.batch_capacity
        if capacity is not None and capacity > 1:
            return self._run_one_batch([(pixels, channel_order)], capacity)[0]
        start = time.perf_counter()
        tensor, geometry = self.preprocessor(pixels, channel_order)
        preprocessed = time.perf_counter()
        outputs = self.backend.infer({self.input_name: tensor}, self.outputs_for(tensor.shape))
        inferred = time.perf_counter()
        timings = StageTimings()
        result = self._decode(outputs, geometry, timings)
        finished = time.perf_counter()
        timings.milliseconds.update(
            zip(STAGES, ((preprocessed - start) * 1e3, (inferred - preprocessed) * 1e3, (finished - inferred) * 1e3))
        )
        return result

    def run_batch(self, images: Sequence[tuple[npt.NDArray, str]]) -> list[SegmentationResult | DetectionResult]:
        """Results for several ``(pixels, channel_order)`` images (e.g. one per camera), in order.

        Images of the same network size share inferences as the model's batch dimension allows: a
        dynamic batch takes them all at once, a fixed batch N takes N at a time (unused batch entries
        zero-filled), batch 1 runs them one after another. Each result's ``inference`` time is that of
        its whole batch.
        """
        capacity = self.batch_capacity
        if capacity == 1 or (capacity is None and len(images) == 1):
            return [self.run(pixels, channel_order) for pixels, channel_order in images]
        results: list[SegmentationResult | DetectionResult | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, (pixels, _) in enumerate(images):
            network_size = self.preprocessor.geometry((pixels.shape[0], pixels.shape[1])).network_size
            by_size.setdefault(network_size, []).append(index)
        for indices in by_size.values():
            step = capacity or len(indices)
            for first in range(0, len(indices), step):
                chunk = indices[first : first + step]
                for index, result in zip(chunk, self._run_one_batch([images[i] for i in chunk], step)):
                    results[index] = result
        return [result for result in results if result is not None]

    def _run_one_batch(
        self, images: Sequence[tuple[npt.NDArray, str]], batch_size: int
    ) -> list[SegmentationResult | DetectionResult]:
        """One inference over ``images`` (all of one network size) in a batch of ``batch_size``."""
        timings = [StageTimings() for _ in images]
        geometries = []
        batch: npt.NDArray | None = None
        for item, ((pixels, channel_order), item_timings) in enumerate(zip(images, timings)):
            start = time.perf_counter()
            tensor, geometry = self.preprocessor(pixels, channel_order)
            if batch is None:
                batch = self._batch_buffer(tensor, batch_size)
            batch[item] = tensor[0]
            geometries.append(geometry)
            item_timings.milliseconds["preprocess"] = (time.perf_counter() - start) * 1e3
        assert batch is not None
        start = time.perf_counter()
        outputs = self.backend.infer({self.input_name: batch}, self.outputs_for(batch.shape))
        inference_ms = (time.perf_counter() - start) * 1e3
        check_batch_outputs(outputs, batch_size, self.spec.name)
        results = []
        for item, (geometry, item_timings) in enumerate(zip(geometries, timings)):
            start = time.perf_counter()
            item_outputs = {name: array[item : item + 1] for name, array in outputs.items()}
            results.append(self._decode(item_outputs, geometry, item_timings))
            item_timings.milliseconds["inference"] = inference_ms
            item_timings.milliseconds["postprocess"] = (time.perf_counter() - start) * 1e3
        return results

    def _batch_buffer(self, tensor: npt.NDArray, batch_size: int) -> npt.NDArray:
        """A zeroed input batch of ``batch_size`` items shaped like ``tensor``, reused while the shape stays."""
        shape = (batch_size, *tensor.shape[1:])
        if self._batch is None or self._batch.shape != shape or self._batch.dtype != tensor.dtype:
            self._batch = np.zeros(shape, tensor.dtype)
        else:
            self._batch.fill(0)
        return self._batch

    def _decode(
        self, outputs: dict[str, npt.NDArray], geometry: ResizeGeometry, timings: StageTimings
    ) -> SegmentationResult | DetectionResult:
        """The result of one image from its outputs (batch 1)."""
        result: SegmentationResult | DetectionResult
        if isinstance(self.decoder, SegmentationDecoder):
            at_source = self.spec.output_resolution == "source"
            labels = self.decoder.decode(outputs, geometry, at_source)
            result = SegmentationResult(labels, self.class_names, geometry, timings)
        else:
            detections = source_detections(self.decoder, outputs, geometry, self.detection_filter)
            result = DetectionResult(detections, self.class_names, geometry, timings)
        return result

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()

    def outputs_for(self, input_shape: tuple[int, ...]) -> dict[str, npt.NDArray]:
        """The backend's output buffers for ``input_shape``, reused while the input shape stays the same."""
        if input_shape != self._buffers_for_shape:
            self._output_buffers = self.backend.allocate_outputs({self.input_name: input_shape})
            self._buffers_for_shape = input_shape
        return self._output_buffers

    def _input_name(self) -> str:
        """The model's only input, which must be the spec's ``input.name`` when that is given: the pipeline
        feeds one image tensor, so a model with further inputs would fail on every frame."""
        names = [info.name for info in self.backend.inputs]
        if self.spec.input.name is not None and self.spec.input.name not in names:
            raise SpecError(f"input.name: the model has no input {self.spec.input.name!r} (inputs: {', '.join(names)})")
        if len(names) != 1:
            raise SpecError(
                f"input: the model has {len(names)} inputs ({', '.join(names)}); the pipeline feeds one image "
                "tensor, so it runs only models whose image is their only input"
            )
        return names[0]

    def _check_output_tensors(self) -> None:
        """Fail before the first frame when the decoder names a tensor the model lacks or that cannot have
        the shape it needs (the message lists the model's outputs)."""
        shapes = {info.name: info.shape for info in self.backend.outputs}
        size = None if isinstance(self.spec.input.size, DynamicSize) else self.spec.input.size
        if isinstance(self.decoder, SegmentationDecoder):
            self.decoder.check_outputs(shapes)
        else:
            self.decoder.check_outputs(shapes, size)

    def _check_input_tensor(self) -> None:
        """Fail early when the spec's input layout, size or dtype cannot fit the model's input."""
        info = next(info for info in self.backend.inputs if info.name == self.input_name)
        spec = self.spec.input
        if info.dtype.name != spec.dtype:
            raise SpecError(f"input.dtype: the model input {info.name!r} is {info.dtype.name}, the spec says {spec.dtype}")
        if len(info.shape) != 4:
            raise SpecError(f"input: the model input {info.name!r} has rank {len(info.shape)}; expected a 4-D image tensor")
        channel_axis, height_axis = (1, 2) if spec.layout == "NCHW" else (3, 1)
        if info.shape[channel_axis] not in (None, 3):
            raise SpecError(
                f"input.layout: the model input {info.name!r} has shape {list(info.shape)}, which has no "
                f"3-channel axis where {spec.layout} puts it"
            )
        model_size = (info.shape[height_axis], info.shape[height_axis + 1])
        if not isinstance(spec.size, DynamicSize):
            if any(dim is not None and dim != size for dim, size in zip(model_size, spec.size)):
                raise SpecError(
                    f"input.size: the spec gives {list(spec.size)} but the model input {info.name!r} "
                    f"has shape {list(info.shape)} ({spec.layout})"
                )
            return
        if model_size == (None, None):
            return  # any rule fits a model of dynamic height and width
        keep_aspect = spec.resize == "keep_aspect_ratio"
        if None in model_size:
            fixed = [f"{side}, {dim}" for side, dim in zip(("height", "width"), model_size) if dim is not None]
            advice = f"the rule must give the model's fixed {fixed[0]}, for every camera"
        else:
            advice = f"give input.size as [height, width]: {list(model_size)}"
        for camera in CHECKED_CAMERA_SIZES:  # a fixed model dimension only fits a rule that always gives it
            network = dynamic_network_size(camera, spec.size, keep_aspect)
            if any(dim is not None and dim != size for dim, size in zip(model_size, network)):
                raise SpecError(
                    f"input.size: the dynamic size rule gives a {network[1]}x{network[0]} network input for a "
                    f"{camera[1]}x{camera[0]} image (width x height) but the model input {info.name!r} has shape "
                    f"{list(info.shape)} ({spec.layout}); {advice}"
                )
