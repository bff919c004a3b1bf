"""Offline replay: run a model's Pipeline over every image of a bag topic, write results, score them.

The output bag holds the original image messages (bytes unchanged) plus, stamped with each
image's header, ``labels`` (mono8 / mono16 ``sensor_msgs/Image``) or ``detections``
(``vision_msgs/Detection2DArray``, what the node would publish). Frames that cannot be read or
processed are counted per reason and never enter the metrics.

Detection is scored by the COCO protocol: every detection down to the evaluation's own low score
threshold (at most 100 per image), independent of the spec's deployment threshold; the detections
at the deployment threshold are scored as well, as an extra view.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from trt_perception.decoders.nms import DetectionFilter, filter_detections
from trt_perception.errors import ImageDecodeError, InferenceError
from trt_perception.evaluation import bag_io
from trt_perception.evaluation.evaluator import EvaluationResult, Evaluator, FramePrediction, OrderedTruth
from trt_perception.evaluation.ground_truth import BoxTruth, CocoFile, MaskFolder, MaskTruth, Truth, class_name
from trt_perception.evaluation.metrics import COCO_MAX_DETECTIONS
from trt_perception.evaluation.report import thumbnail
from trt_perception.image_decoding import DEFAULT_MAX_PIXELS
from trt_perception.pipeline import Pipeline
from trt_perception.pipeline_factory import create_pipeline
from trt_perception.results import SegmentationResult
from trt_perception.spec import ModelSpec, load_model_spec

if TYPE_CHECKING:
    from trt_perception.gpu.pipeline import GpuPipeline


DEFAULT_EVAL_SCORE_THRESHOLD = 0.001  # as COCO evaluations of YOLO-style detectors use


@dataclass
class BagEvalOptions:
    """What to evaluate and where to put the results."""

    bag: Path
    model_spec: str | Path
    image_topic: str
    out: Path
    gt_topic: str | None = None
    gt_coco: Path | None = None
    gt_masks: Path | None = None
    ignore_index: int | None = 255
    labels_topic: str = "/labels"
    detections_topic: str = "/detections"
    storage: str = "mcap"
    worst_frames: int = 4
    progress: bool = True
    device: str = "cpu"  # where pre/post-processing runs: cpu | gpu | auto (see create_pipeline)
    eval_score_threshold: float = DEFAULT_EVAL_SCORE_THRESHOLD  # detection: lowest score the COCO metrics see
    threads: int = 0  # ONNX Runtime intra-op threads (0: its default)
    frame_done: Callable[[], None] | None = None  # called after each image message (fleet progress)
    time_range: tuple[int, int] | None = None  # only messages logged in [start, stop) ns (a fleet task's slice)
    # a slice's ground truth is read this far (ns) beyond its window: truth logged up to this long before
    # or after its image counts with it, as in one run over the whole bag (see ``_replay``)
    truth_margin_ns: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are skipped, read from their header (0: no limit)


def evaluation_spec(model_spec: str | Path | ModelSpec) -> ModelSpec:
    """The spec with labels produced at source resolution (ground truth is at source size)."""
    spec = model_spec if isinstance(model_spec, ModelSpec) else load_model_spec(model_spec)
    return dataclasses.replace(spec, output_resolution="source")


def checked_ignore_index(num_classes: int, requested: int | None) -> int | None:
    """``requested``, refused when it is a real class index of the model (it cannot mean 'ignore')."""
    if requested is not None and requested < num_classes:
        raise bag_io.BagError(
            f"ignore index {requested} is class {requested} of the model's {num_classes} classes; "
            "choose another or none"
        )
    return requested


def evaluation_filter(deployed: DetectionFilter, score_threshold: float) -> DetectionFilter:
    """The deployment filter (NMS, classes) with the evaluation's lower threshold and at least 100 per image.

    What this keeps includes everything the deployment filter keeps: ``filter_detections`` with the
    deployment filter gives the node's detections back from it (NMS survivors above the deployment
    threshold only depend on higher-scoring boxes).
    """
    if not 0.0 <= score_threshold <= deployed.score_threshold:
        raise bag_io.BagError(
            f"evaluation score threshold {score_threshold} must lie in [0, {deployed.score_threshold}] "
            "(the spec's deployment threshold): the COCO protocol scores every detection above a low threshold"
        )
    return dataclasses.replace(
        deployed, score_threshold=score_threshold, max_detections=max(deployed.max_detections, COCO_MAX_DETECTIONS)
    )


def ground_truth_from_options(options: BagEvalOptions, task: str) -> OrderedTruth | None:
    """The file-based ground truth named by the options, checked against the task."""
    if options.gt_masks is not None:
        if task != "segmentation":
            raise bag_io.BagError("--gt-masks needs a segmentation model; use --gt-coco or --gt-topic for detection")
        return MaskFolder(options.gt_masks, options.max_pixels)
    if options.gt_coco is not None:
        if task != "detection":
            raise bag_io.BagError("--gt-coco needs a detection model; use --gt-masks or --gt-topic for segmentation")
        return CocoFile(options.gt_coco)
    return None


def truth_from_message(message: Any, msgtype: str, class_names: list[str]) -> Truth:
    """Ground truth from a mono8/mono16 label Image or a Detection2DArray (ValueError if unusable),
    a detection's ``class_id`` read as a class index or a name of ``class_names`` (``class_name``)."""
    if msgtype == bag_io.DETECTIONS_TYPE:
        boxes, class_ids, _ = bag_io.detections_from_message(message)
        if not np.isfinite(boxes).all():
            raise ValueError("ground-truth Detection2DArray has a box with a coordinate or size that is not finite")
        return BoxTruth(boxes, [class_name(class_id, class_names) for class_id in class_ids])
    if message.encoding not in ("mono8", "mono16", "8UC1", "16UC1"):
        raise ValueError(f"ground-truth image encoding {message.encoding!r} is not a class-index image (mono8/mono16)")
    try:
        image = bag_io.image_from_message(message, msgtype)
    except ImageDecodeError as error:
        raise ValueError(f"ground-truth image: {error}") from error
    return MaskTruth(image.pixels[:, :, 0])


@dataclass
class EvaluationSetup:
    """An opened bag checked against the options, and the evaluator for it."""

    spec: ModelSpec
    reader: Any
    evaluator: Evaluator
    image_count: int

    def close(self) -> None:
        """Close the bag."""
        self.reader.close()


def prepare_evaluation(options: BagEvalOptions, deployment_view: bool = False) -> EvaluationSetup:
    """Load the spec, open the bag, check topics and ground truth; the caller closes the result.

    ``deployment_view``: detection frames will also carry the detections at the spec's threshold.
    """
    spec = evaluation_spec(options.model_spec)
    gt_options = [o for o in (options.gt_topic, options.gt_coco, options.gt_masks) if o is not None]
    if len(gt_options) > 1:
        raise bag_io.BagError("give one ground truth: --gt-topic, --gt-coco or --gt-masks")
    ordered_truth = ground_truth_from_options(options, spec.task)
    class_names = list(spec.labels or ())
    if spec.task == "segmentation" and not class_names:
        raise bag_io.BagError(f"model spec {spec.name}: segmentation evaluation needs `labels` (the class count)")
    evaluator = Evaluator(
        spec.name,
        spec.task,
        class_names,
        palette=spec.palette,
        ordered_truth=ordered_truth,
        truth_topic=options.gt_topic,
        ignore_index=(
            checked_ignore_index(len(class_names), options.ignore_index) if spec.task == "segmentation" else None
        ),
        deployment_threshold=spec.detection.score_threshold if deployment_view else None,
        worst_frames=options.worst_frames,
    )
    reader = bag_io.open_reader(options.bag)
    try:
        bag_io.require_topic(reader, options.image_topic, bag_io.IMAGE_TYPES)
        if options.gt_topic is not None:
            wanted = bag_io.IMAGE_TYPE if spec.task == "segmentation" else bag_io.DETECTIONS_TYPE
            bag_io.require_topic(reader, options.gt_topic, [wanted])
        image_count = sum(c.msgcount for c in reader.connections if c.topic == options.image_topic)
        if image_count == 0:
            raise bag_io.BagError(f"topic {options.image_topic!r} has no messages in {options.bag}")
    except BaseException:
        reader.close()
        raise
    options.out.mkdir(parents=True, exist_ok=True)
    return EvaluationSetup(spec, reader, evaluator, image_count)


def run_bag_eval(options: BagEvalOptions) -> EvaluationResult:
    """Replay the bag through the pipeline, write the output bag under ``options.out`` and score."""
    setup = prepare_evaluation(options, deployment_view=True)
    try:
        pipeline = create_pipeline(setup.spec, intra_op_threads=options.threads, device=options.device)
        device = pipeline.device
        try:
            deployed_filter = None
            if setup.spec.task == "detection":
                deployed_filter = pipeline.detection_filter
                pipeline.detection_filter = evaluation_filter(deployed_filter, options.eval_score_threshold)
            start = time.perf_counter()
            with bag_io.BagWriter(options.out / "bag", options.storage, bag_io.bag_distro(setup.reader)) as writer:
                try:
                    _replay(setup, options, pipeline, writer, deployed_filter)
                except bag_io.BagReadError as error:
                    setup.evaluator.read_error = str(error)
            wall_seconds = time.perf_counter() - start
        finally:
            pipeline.close()
    finally:
        setup.close()
    return dataclasses.replace(setup.evaluator.finish(wall_seconds), device=device)


def _replay(
    setup: EvaluationSetup,
    options: BagEvalOptions,
    pipeline: Pipeline | GpuPipeline,
    writer: bag_io.BagWriter,
    deployed_filter: DetectionFilter | None,
) -> None:
    """Run every image of the bag (or of ``options.time_range``) through the pipeline, write the outputs
    and score them against the ground truth.

    In a time slice, ground truth is read ``truth_margin_ns`` beyond the window, so that every truth
    counts in the slice that holds its image (as in one run over the bag): truth whose image lies in a
    neighbouring slice's window is left to that slice, and truth logged outside the window is not
    counted as unmatched here (the slice it was logged in counts it). This needs image stamps that do
    not repeat within the read range (the fleet runs other bags whole: ``fleet.plan_units``).
    """
    evaluator = setup.evaluator
    store = bag_io.typestore(bag_io.bag_distro(setup.reader))
    topics = [options.image_topic] + ([options.gt_topic] if options.gt_topic else [])
    window = options.time_range
    margin = options.truth_margin_ns if window is not None and options.gt_topic else 0
    neighbour_stamps = _image_stamps_beside(setup.reader, store, options.image_topic, window, margin) if margin else set()
    read_range = (None, None) if window is None else (max(0, window[0] - margin), window[1] + margin)
    index, warmed_up = -1, False
    progress = tqdm(total=setup.image_count, unit="frame", disable=not options.progress, desc="bag-eval")
    for message in bag_io.iter_messages(setup.reader, topics, *read_range):
        in_window = window is None or window[0] <= message.log_time < window[1]
        if message.topic != options.image_topic:
            add_truth_message(message, store, evaluator, in_window, neighbour_stamps)
            continue
        if not in_window:
            continue  # a neighbouring slice's frame, read only for the ground truth around it
        index += 1
        progress.update(1)
        if options.frame_done is not None:
            options.frame_done()
        writer.write_raw(message.topic, message.msgtype, message.log_time, message.data)
        try:
            msg = bag_io.deserialize(message, store)
        except bag_io.BagError:
            evaluator.skip(index, f"corrupt {message.msgtype} message (cannot deserialize)")
            continue
        try:
            start = time.perf_counter()
            image = bag_io.image_from_message(msg, message.msgtype, options.max_pixels)
            decode_ms = (time.perf_counter() - start) * 1e3
            if not warmed_up:  # one untimed run: first-inference set-up is no frame's latency
                pipeline.run(image.pixels, image.channel_order)
                warmed_up = True
            start = time.perf_counter()
            result = pipeline.run(image.pixels, image.channel_order)
            run_ms = (time.perf_counter() - start) * 1e3
        except (ImageDecodeError, InferenceError) as error:
            evaluator.skip(index, f"{type(error).__name__}: {error}")
            if margin:  # its ground truth, wherever logged, counts as unmatched in this slice
                evaluator.matcher.frame_skipped(bag_io.stamp_ns(msg.header))
            continue
        milliseconds = {"decode": decode_ms, **result.timings.milliseconds, "total": decode_ms + run_ms}
        frame = FramePrediction(
            index=index,
            stamp=bag_io.stamp_ns(msg.header),
            source_size=(image.height, image.width),
            thumbnail=thumbnail(image.pixels, image.channel_order) if evaluator.has_truth else None,
        )
        if isinstance(result, SegmentationResult):
            # kept while waiting for ground truth: never a view of buffers the next frame reuses
            frame.labels = result.labels.copy() if evaluator.has_truth else result.labels
            encoding = "mono8" if result.labels.dtype == np.uint8 else "mono16"
            writer.write(options.labels_topic, bag_io.IMAGE_TYPE, message.log_time,
                         bag_io.image_message(writer.store, msg.header, result.labels, encoding))
        else:
            assert deployed_filter is not None
            frame.detections, frame.class_names = result.detections, result.names()
            deployed = dataclasses.replace(result, detections=filter_detections(result.detections, deployed_filter))
            frame.deployed, frame.deployed_names = deployed.detections, deployed.names()
            writer.write(options.detections_topic, bag_io.DETECTIONS_TYPE, message.log_time,
                         bag_io.detection_array_message(writer.store, msg.header, deployed.detections.boxes,
                                                        frame.deployed_names, deployed.detections.scores.tolist()))
        evaluator.add_prediction(frame, milliseconds)
    progress.close()


def _image_stamps_beside(
    reader: Any, store: Any, image_topic: str, window: tuple[int, int] | None, margin: int
) -> set[int]:
    """Header stamps of the images logged within ``margin`` ns before and after ``window`` (the
    neighbouring slices' frames whose ground truth this slice may read)."""
    if window is None:
        return set()
    return {
        stamp
        for start, stop in ((max(0, window[0] - margin), window[0]), (window[1], window[1] + margin))
        for _, stamp in image_stamps(reader, store, image_topic, start, stop)
    }


def image_stamps(
    reader: Any, store: Any, image_topic: str, start: int | None = None, stop: int | None = None
) -> Iterator[tuple[int, int]]:
    """Log time and header stamp (ns) of each image logged in ``[start, stop)``, in log-time order;
    corrupt messages are left out (their slice skips them: no ground truth can match them)."""
    for message in bag_io.iter_messages(reader, [image_topic], start, stop):
        try:
            stamp = bag_io.stamp_ns(bag_io.deserialize(message, store).header)
        except bag_io.BagError:
            continue
        yield message.log_time, stamp


def add_truth_message(
    message: bag_io.BagMessage, store: Any, evaluator: Evaluator, in_window: bool = True,
    neighbour_stamps: Collection[int] = (),
) -> None:
    """Hand a ground-truth message of the bag to the evaluator, or count why it is unusable.

    In a time slice (see ``_replay``), truth logged outside the window (``in_window`` False) is
    neither counted as unusable nor as unmatched, and truth whose stamp is in ``neighbour_stamps``
    (an image of a neighbouring slice) is left to that slice.
    """
    try:
        msg = bag_io.deserialize(message, store)
    except bag_io.BagError:
        if in_window:
            evaluator.truth_not_usable(f"corrupt {message.msgtype} ground-truth message (cannot deserialize)")
        return
    try:
        truth = truth_from_message(msg, message.msgtype, evaluator.class_names)
    except ValueError as error:
        if in_window:
            evaluator.truth_not_usable(str(error))
        return
    stamp = bag_io.stamp_ns(msg.header)
    if stamp not in neighbour_stamps:
        evaluator.add_truth(stamp, truth, count_unmatched=in_window)
