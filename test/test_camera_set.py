"""The multi-camera building blocks without ROS: camera names, topics, the fair mailbox, statistics."""

from __future__ import annotations

import threading
import time

from trt_perception.ros.camera_set import CameraSlots, CameraStatistics, camera_names_problem, camera_topic
from trt_perception.ros.statistics import NodeStatistics


def test_slot_keeps_only_newest_frame_of_a_camera_and_reports_replacements() -> None:
    slots: CameraSlots[int] = CameraSlots(1)
    replaced = [slots.put(0, i) for i in range(5)]
    assert replaced == [False, True, True, True, True]
    assert slots.take(None, timeout=0) == [(0, 4)]
    assert slots.take(None, timeout=0) == []


def test_take_wakes_up_on_put_from_another_thread() -> None:
    slots: CameraSlots[str] = CameraSlots(3)
    threading.Timer(0.05, slots.put, args=(2, "frame")).start()
    start = time.monotonic()
    assert slots.take(None, timeout=5) == [(2, "frame")]
    assert time.monotonic() - start < 2


def test_close_releases_waiting_take() -> None:
    slots: CameraSlots[str] = CameraSlots(2)
    threading.Timer(0.05, slots.close).start()
    start = time.monotonic()
    assert slots.take(1, timeout=5) == []
    assert slots.closed and time.monotonic() - start < 2


def test_take_without_limit_serves_every_waiting_camera_once() -> None:
    slots: CameraSlots[str] = CameraSlots(3)
    for frame in ("a0", "a1", "a2"):
        slots.put(0, frame)
    slots.put(2, "c0")
    assert slots.take(None, timeout=0) == [(0, "a2"), (2, "c0")]


def test_fast_camera_cannot_starve_slow_ones_when_one_camera_fits_per_inference() -> None:
    # camera 0 delivers a frame before every take; cameras 1 and 2 once each, at the start
    slots: CameraSlots[str] = CameraSlots(3)
    slots.put(1, "slow1")
    slots.put(2, "slow2")
    served = []
    for round_number in range(4):
        slots.put(0, f"fast{round_number}")
        served.extend(slots.take(1, timeout=0))
    assert served == [(0, "fast0"), (1, "slow1"), (2, "slow2"), (0, "fast3")]


def test_round_robin_continues_after_the_camera_served_last_with_a_batch_of_two() -> None:
    slots: CameraSlots[int] = CameraSlots(3)
    for round_number in range(3):
        for camera in range(3):
            slots.put(camera, round_number)
    assert [camera for camera, _ in slots.take(2, timeout=0)] == [0, 1]
    for camera in range(3):
        slots.put(camera, 9)
    assert [camera for camera, _ in slots.take(2, timeout=0)] == [2, 0]
    assert [camera for camera, _ in slots.take(2, timeout=0)] == [1]


def test_camera_names_are_topic_tokens_and_unique() -> None:
    assert camera_names_problem(["front", "rear_left", "cam2"]) is None
    assert camera_names_problem([]) is None
    assert "'2cam'" in (camera_names_problem(["2cam"]) or "")
    assert "'front/x'" in (camera_names_problem(["front/x"]) or "")
    assert "''" in (camera_names_problem([""]) or "")
    assert "front named more than once" in (camera_names_problem(["front", "rear", "front"]) or "")


def test_camera_topics_live_under_the_camera_name() -> None:
    assert camera_topic("front", "image") == "front/image"
    assert camera_topic("front", "image/compressed") == "front/image/compressed"
    assert camera_topic("front", "~/labels") == "~/front/labels"
    assert camera_topic("", "image") == "image"
    assert camera_topic("", "~/labels") == "~/labels"


def test_camera_statistics_count_in_own_and_node_totals() -> None:
    total = NodeStatistics()
    front, rear = CameraStatistics(total, separate=True), CameraStatistics(total, separate=True)
    front.frame_received()
    front.frame_dropped()
    rear.frame_received()
    rear.frame_processed({"inference": 2.0})
    rear.frame_failed("bad", bad_input=True)
    assert (front.own.received, front.own.dropped, front.own.processed) == (1, 1, 0)
    assert (rear.own.received, rear.own.dropped, rear.own.processed, rear.own.bad_input) == (1, 0, 1, 1)
    assert (total.received, total.dropped, total.processed, total.bad_input) == (2, 1, 1, 1)
    single = CameraStatistics(total, separate=False)
    single.frame_received()
    assert single.own is total and total.received == 3
