"""Live evaluation: play a bag's images into the running node over DDS and score what it publishes.

The image messages are published as the bag stores them (serialized bytes, headers unchanged) at
the recorded rate or a fixed one; the node's outputs are matched to the played frames by header
stamp, so the evaluation includes ROS transport, the node's frame dropping and real timing. Latency
is publish-to-receive per frame ("end_to_end"). Frames the node never answers are counted.

It lives in ``ros/`` because it needs ROS (rclpy and the message packages); ``cli/bag_eval.py``
imports it only for ``--live``, and everything else of the evaluation runs without ROS.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from trt_perception.errors import ImageDecodeError
from trt_perception.evaluation import bag_io
from trt_perception.evaluation.bag_eval import BagEvalOptions, EvaluationSetup, add_truth_message, prepare_evaluation
from trt_perception.evaluation.evaluator import EvaluationResult, FramePrediction
from trt_perception.evaluation.ground_truth import class_index, class_name
from trt_perception.evaluation.report import thumbnail
from trt_perception.results import Detections

DEFAULT_OUTPUT_TOPICS = {"segmentation": "/segmentation/labels", "detection": "/detection/detections"}


@dataclass
class LiveOptions:
    """How to reach the node and how to play."""

    node_input: str | None = None  # default: the bag's image topic
    node_output: str | None = None  # default: the node's ~/labels or ~/detections
    rate: float | None = None  # frames per second; None: the recorded timing
    wait_for_node: float = 30.0  # seconds to wait for the node's topics to connect
    answer_timeout: float = 3.0  # seconds a frame waits for the node's answer (after the last frame too)


@dataclass
class PlayedFrame:
    """A frame sent to the node and waiting for its answer."""

    index: int
    log_time: int
    sent: float
    message: Any  # the deserialized input (for the report's pictures), None when not needed


def run_live_eval(options: BagEvalOptions, live: LiveOptions) -> EvaluationResult:
    """Play the bag into the node, record its outputs under ``options.out`` and score them."""
    with live_player(options, live) as player:
        start = time.perf_counter()
        player.play()
        wall_seconds = time.perf_counter() - start
    return player.setup.evaluator.finish(wall_seconds)


@contextmanager
def live_player(options: BagEvalOptions, live: LiveOptions) -> Iterator[_Player]:
    """The evaluation set up, a ROS node in a context of its own and the output bag open, as a player of
    the bag; all of it closed again on leaving."""
    setup = prepare_evaluation(options)
    context = Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("trt_perception_bag_eval", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        with bag_io.BagWriter(options.out / "bag", options.storage, bag_io.bag_distro(setup.reader)) as writer:
            yield _Player(setup, options, live, node, executor, writer)
        executor.shutdown()
        node.destroy_node()
    finally:
        setup.close()
        rclpy.shutdown(context=context)


class _Player:
    """Publishes the frames on time and handles the node's answers, on one thread (spin_once)."""

    def __init__(
        self, setup: EvaluationSetup, options: BagEvalOptions, live: LiveOptions, node: Any, executor: Any,
        writer: bag_io.BagWriter,
    ) -> None:
        self.setup, self.options, self.live = setup, options, live
        self.node, self.executor, self.writer = node, executor, writer
        self.store = bag_io.typestore(bag_io.bag_distro(setup.reader))
        self.input_topic = live.node_input or options.image_topic
        self.output_topic = live.node_output or DEFAULT_OUTPUT_TOPICS[setup.spec.task]
        self.output_type = bag_io.IMAGE_TYPE if setup.spec.task == "segmentation" else bag_io.DETECTIONS_TYPE
        self.input_type = bag_io.topic_types(setup.reader)[options.image_topic]
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self.publisher = node.create_publisher(
            CompressedImage if self.input_type == bag_io.COMPRESSED_IMAGE_TYPE else Image, self.input_topic, qos
        )
        self.subscription = node.create_subscription(
            Image if self.output_type == bag_io.IMAGE_TYPE else Detection2DArray,
            self.output_topic, self._on_output, qos, raw=True,
        )
        self.pending: dict[int, PlayedFrame] = {}
        self.probe_stamp: int | None = None
        self.probe_answered = False

    def _probe_frame(self) -> tuple[bag_io.BagMessage, Any]:
        """The first image message that deserializes."""
        for message in bag_io.iter_messages(self.setup.reader, [self.options.image_topic]):
            try:
                return message, bag_io.deserialize(message, self.store)
            except bag_io.BagError:
                continue
        raise bag_io.BagError(f"no image message on {self.options.image_topic} can be read")

    def _wait_for_node(self) -> None:
        """Wait until the node answers a probe: the first frame re-stamped with a stamp no frame has.

        Matching topics is not enough: the node skips work until it sees our subscription, and
        discovery completes per endpoint. The probe's answers are not evaluated.
        """
        probe, msg = self._probe_frame()
        self.probe_stamp = bag_io.stamp_ns(msg.header) - 1
        msg.header = bag_io.header_message(self.store, self.probe_stamp, msg.header.frame_id)
        data = bytes(self.store.serialize_cdr(msg, probe.msgtype))
        deadline = time.monotonic() + self.live.wait_for_node
        while not self.probe_answered:
            if time.monotonic() > deadline:
                raise bag_io.BagError(
                    f"the node did not answer within {self.live.wait_for_node:.0f} s: subscribers of "
                    f"{self.input_topic}: {self.publisher.get_subscription_count()}, publishers of "
                    f"{self.output_topic}: {self.subscription.get_publisher_count()} "
                    "(is the node running, with its image input remapped to that topic?)"
                )
            if self.publisher.get_subscription_count() > 0:
                self.publisher.publish(data)
            self._spin_until(time.monotonic() + 0.5, stop_on_probe=True)

    def _spin_until(self, deadline: float, stop_on_probe: bool = False) -> None:
        while (remaining := deadline - time.monotonic()) > 0 and not (stop_on_probe and self.probe_answered):
            self.executor.spin_once(timeout_sec=remaining)

    def play(self) -> None:
        """Send every frame at its time, then wait for the last answers."""
        evaluator = self.setup.evaluator
        self._wait_for_node()
        try:
            self._play_frames()
        except bag_io.BagReadError as error:
            evaluator.read_error = str(error)
        self._spin_until(time.monotonic() + self.live.answer_timeout)
        self._give_up_unanswered(math.inf)

    def _give_up_unanswered(self, sent_before: float) -> None:
        """Count the frames sent before ``sent_before`` (monotonic seconds) and still unanswered as
        such, and forget them: the node drops frames by design, so waiting frames (each holding its
        image while ground truth is given) must not pile up over a long bag."""
        for stamp, frame in list(self.pending.items()):  # in the order they were sent
            if frame.sent >= sent_before:
                break
            del self.pending[stamp]
            self.setup.evaluator.skip(frame.index, f"no answer from the node within {self.live.answer_timeout:g} s "
                                                   "(dropped by the node, lost, or rejected as bad input)")

    def _play_frames(self) -> None:
        options, evaluator = self.options, self.setup.evaluator
        topics = [options.image_topic] + ([options.gt_topic] if options.gt_topic else [])
        start, first_log_time, index = time.monotonic(), None, -1
        for message in bag_io.iter_messages(self.setup.reader, topics):
            if message.topic != options.image_topic:
                add_truth_message(message, self.store, evaluator)
                continue
            index += 1
            self.writer.write_raw(message.topic, message.msgtype, message.log_time, message.data)
            first_log_time = message.log_time if first_log_time is None else first_log_time
            offset = index / self.live.rate if self.live.rate else (message.log_time - first_log_time) / 1e9
            self._spin_until(start + offset)
            self._give_up_unanswered(time.monotonic() - self.live.answer_timeout)
            try:
                msg = bag_io.deserialize(message, self.store)
            except bag_io.BagError:
                evaluator.skip(index, f"corrupt {message.msgtype} message (cannot deserialize, not played)")
                continue
            stamp = bag_io.stamp_ns(msg.header)
            if stamp in self.pending:
                evaluator.skip(self.pending.pop(stamp).index, "two frames with one header stamp (answers ambiguous)")
                evaluator.skip(index, "two frames with one header stamp (answers ambiguous)")
                continue
            self.pending[stamp] = PlayedFrame(index, message.log_time, time.monotonic(),
                                              msg if evaluator.has_truth else None)
            self.publisher.publish(message.data)

    def _on_output(self, data: bytes) -> None:
        received = time.monotonic()
        message = bag_io.BagMessage(self.output_topic, self.output_type, 0, bytes(data))
        try:
            msg = bag_io.deserialize(message, self.store)
        except bag_io.BagError:
            self.setup.evaluator.outputs_without_frame += 1
            return
        stamp = bag_io.stamp_ns(msg.header)
        if stamp == self.probe_stamp:
            self.probe_answered = True
            return
        frame = self.pending.pop(stamp, None)
        if frame is None:
            self.setup.evaluator.outputs_without_frame += 1
            return
        latency_ns = round((received - frame.sent) * 1e9)
        self.writer.write_raw(self.output_topic, self.output_type, frame.log_time + latency_ns, message.data)
        prediction = self._prediction(frame, msg)
        if prediction is None:
            return
        self.setup.evaluator.add_prediction(prediction, {"end_to_end": latency_ns / 1e6})

    def _prediction(self, frame: PlayedFrame, msg: Any) -> FramePrediction | None:
        evaluator = self.setup.evaluator
        source, picture = None, None
        if frame.message is not None:
            try:
                image = bag_io.image_from_message(frame.message, self.input_type)
            except ImageDecodeError as error:
                evaluator.skip(frame.index, f"the node answered but the frame does not decode here: {error}")
                return None
            source, picture = (image.height, image.width), thumbnail(image.pixels, image.channel_order)
        prediction = FramePrediction(frame.index, bag_io.stamp_ns(msg.header), source or (0, 0), picture)
        if self.output_type == bag_io.IMAGE_TYPE:
            try:
                prediction.labels = bag_io.image_from_message(msg, self.output_type).pixels[:, :, 0]
            except ImageDecodeError as error:
                evaluator.skip(frame.index, f"the node's label image does not decode: {error}")
                return None
        else:
            boxes, class_ids, scores = bag_io.detections_from_message(msg)
            known = list(evaluator.class_names)
            ids = [class_index(class_id, known) for class_id in class_ids]
            prediction.detections = Detections(
                boxes.astype(np.float32), np.asarray(scores, np.float32), np.asarray(ids, np.int64)
            )
            prediction.class_names = [class_name(class_id, known) for class_id in class_ids]
        return prediction
