"""Managed (lifecycle) segmentation and detection nodes: executables ``segmentation_lifecycle_node``
and ``detection_lifecycle_node``.

The same parameters, topics and processing as the plain nodes, brought up and down by
``ros2 lifecycle set`` (or a lifecycle manager) instead of starting at once:

- configure: load the model spec and the model (ONNX Runtime session, or a TensorRT engine loaded or
  built) and create the publishers (lifecycle publishers: silent until active). A bad spec or model
  logs one line and leaves the node unconfigured.
- activate: publish ``~/label_info``, subscribe to the camera(s), start inference and diagnostics.
- deactivate: unsubscribe, let the frames in hand finish, stop inference and diagnostics.
- cleanup: destroy the publishers, release the model (the backend's session or engine with its
  host and GPU memory) and hand the freed heap back to the operating system.
- shutdown (from any state) and errors: as far as needed, deactivate and clean up. An unexpected
  exception in a transition is logged in one line (rclpy makes it an ERROR transition silently).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

from lifecycle_msgs.srv import ChangeState

from rclpy.lifecycle import LifecycleNode, LifecyclePublisher, LifecycleState, TransitionCallbackReturn
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile

from trt_perception.ros.detection_node import DetectionNode
from trt_perception.ros.image_conversion import return_free_heap
from trt_perception.ros.perception_node import (
    DEACTIVATE_TIMEOUT,
    STARTUP_ERRORS,
    WORKER_STOP_TIMEOUT,
    PerceptionNode,
    main_for,
)
from trt_perception.ros.segmentation_node import SegmentationNode
from trt_perception.ros.throttle import one_line, quote_limited


class ManagedPerceptionNode(PerceptionNode, LifecycleNode):
    """A perception node driven by lifecycle transitions (put it before the task's node class)."""

    managed = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[call-arg]  # the task node's constructor (next in the MRO)
        # rclpy before 9 (Jazzy) raises from its change_state service for a transition that the current
        # state lacks (e.g. a repeated activate): the caller never gets an answer. Answer it here instead.
        self._service_change_state.callback = partial(
            self._answer_unavailable_transition, self._service_change_state.callback
        )

    def _answer_unavailable_transition(
        self, change_state: Callable[[Any, Any], Any], request: ChangeState.Request, response: ChangeState.Response
    ) -> Any:
        """``success`` false and one line for a transition id that the current state has not; any other
        request goes to rclpy's ``change_state``."""
        transition = request.transition
        state_label = self._state_machine.current_state[1]
        available = {description[0]: description[1] for description in self._state_machine.available_transitions}
        if not transition.label and transition.id not in available:
            choices = ", ".join(f"{label} ({transition_id})" for transition_id, label in available.items())
            self.get_logger().warning(
                f"transition {transition.id} refused: state {state_label} has no such transition (available: "
                f"{choices or 'none'})"
            )
            response.success = False
            return response
        return change_state(request, response)

    def create_output_publisher(self, message_type: type, topic: str, qos: QoSProfile | int, **kwargs: Any) -> Publisher:
        return self.create_lifecycle_publisher(message_type, topic, qos, **kwargs)

    def destroy_output_publisher(self, publisher: Publisher) -> None:
        self.destroy_lifecycle_publisher(cast(LifecyclePublisher, publisher))  # made by create_output_publisher

    @contextmanager
    def _log_unexpected(self, transition: str) -> Iterator[None]:
        """Log an unexpected exception of a transition callback before it goes on to rclpy, which turns
        it into an ERROR transition without a word (its TODO: "log sth here")."""
        try:
            yield
        except Exception as error:
            self.get_logger().error(
                quote_limited(f"{transition} failed unexpectedly: {type(error).__name__}: {one_line(str(error))}")
            )
            raise

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        publishers_before = set(self.publishers)
        with self._log_unexpected("configure"):
            try:
                self.configure_pipeline()
            except Exception as error:
                self._discard_partial_configuration(publishers_before)
                if not isinstance(error, STARTUP_ERRORS):
                    raise
                self.get_logger().error(quote_limited(f"cannot configure: {one_line(str(error))}"))
                return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {self.spec.name} loaded (backend {self.pipeline.backend.name})")
        return TransitionCallbackReturn.SUCCESS

    def _discard_partial_configuration(self, publishers_before: set[Publisher]) -> None:
        """Destroy the outputs and close the model that a failed configure made before it failed (a
        lifecycle manager may retry configure: nothing may pile up)."""
        for publisher in set(self.publishers) - publishers_before:
            self.destroy_output_publisher(publisher)
        self._cameras = []
        self._running = False  # set before the last output is made: error processing must not release again
        if hasattr(self, "pipeline"):
            self.pipeline.close()
            del self.pipeline

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._log_unexpected("activate"):
            result = super().on_activate(state)  # the lifecycle publishers
            if result == TransitionCallbackReturn.SUCCESS:
                self.start_processing()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._log_unexpected("deactivate"):
            if not self.stop_processing():
                self.get_logger().error(
                    f"cannot deactivate: a frame is still being processed after {DEACTIVATE_TIMEOUT:g} s; the node "
                    "stays active (taking no new frames, model kept) until a later deactivate finds the frame finished"
                )
                return TransitionCallbackReturn.FAILURE
            self.get_logger().info("deactivated: no inference, no outputs")
            return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._log_unexpected("cleanup"):
            self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._log_unexpected("shutdown"):
            self._stop_and_release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._log_unexpected("error processing"):
            self._stop_and_release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Stop and release whatever the node's state holds, then destroy the node."""
        self._stop_and_release()
        super().destroy_node()

    def _stop_and_release(self) -> None:
        if not self.stop(WORKER_STOP_TIMEOUT):
            return  # the worker is still inside a frame (a signal during a long one): the process exits without it
        self.stop_processing()  # the worker has ended: this unsubscribes and stops the timers, waiting for nothing
        if getattr(self, "_running", False):  # absent when the node's own __init__ failed
            self._release_model()

    def _release_model(self) -> None:
        name = self.spec.name
        self.release_pipeline()
        gc.collect()
        return_free_heap()
        if self.context.ok():  # not while SIGINT/SIGTERM tear the node down: /rosout is gone then
            self.get_logger().info(f"cleaned up: {name} released")


class SegmentationLifecycleNode(ManagedPerceptionNode, SegmentationNode):
    """The segmentation node as a managed node."""


class DetectionLifecycleNode(ManagedPerceptionNode, DetectionNode):
    """The detection node as a managed node."""


def segmentation_main() -> int:
    """Entry point of the ``segmentation_lifecycle_node`` executable; the exit code."""
    return main_for(SegmentationLifecycleNode, "segmentation")


def detection_main() -> int:
    """Entry point of the ``detection_lifecycle_node`` executable; the exit code."""
    return main_for(DetectionLifecycleNode, "detection")
