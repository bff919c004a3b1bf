"""Two separate processes exchange sensor_msgs/Image and vision_msgs/Detection2DArray over DDS.

The peer (test/dds_peer.py, its own process) publishes messages described in a JSON file written
here; this process subscribes and checks every field arrived unchanged. This exercises the built
environment end to end: the rclpy / Fast DDS wheels, sensor_msgs and the vision_msgs typesupport.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy missing: run the tests with scripts/test.sh (.venv)")
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

PEER_SCRIPT = Path(__file__).with_name("dds_peer.py")
RECEIVE_TIMEOUT_S = 60.0


def random_header(rng: random.Random) -> dict[str, Any]:
    return {
        "sec": rng.randrange(2**31),
        "nanosec": rng.randrange(10**9),
        "frame_id": f"camera_{rng.randrange(1000)}_optical_frame",
    }


def random_detections(rng: random.Random) -> dict[str, Any]:
    detections = []
    for index in range(rng.randint(2, 5)):
        detections.append(
            {
                "id": f"track-{index}" if index % 2 else "",
                "center_x": rng.uniform(0, 1920),
                "center_y": rng.uniform(0, 1080),
                "theta": rng.uniform(-3.14, 3.14),
                "size_x": rng.uniform(1, 500),
                "size_y": rng.uniform(1, 500),
                "results": [
                    {
                        "class_id": rng.choice(["person", "traffic light", "17", "bicycle"]),
                        "score": rng.random(),
                        "position_x": rng.uniform(-10, 10),
                        "covariance": [rng.uniform(-1, 1) for _ in range(36)],
                    }
                    for _ in range(rng.randint(1, 3))
                ],
            }
        )
    return {"header": random_header(rng), "detections": detections}


def assert_header(received: Any, expected: dict[str, Any]) -> None:
    assert received.stamp.sec == expected["sec"]
    assert received.stamp.nanosec == expected["nanosec"]
    assert received.frame_id == expected["frame_id"]


def assert_detections(received: Detection2DArray, expected: dict[str, Any]) -> None:
    assert_header(received.header, expected["header"])
    assert len(received.detections) == len(expected["detections"])
    for det, want in zip(received.detections, expected["detections"]):
        assert_header(det.header, expected["header"])
        assert det.id == want["id"]
        assert det.bbox.center.position.x == want["center_x"]
        assert det.bbox.center.position.y == want["center_y"]
        assert det.bbox.center.theta == want["theta"]
        assert det.bbox.size_x == want["size_x"]
        assert det.bbox.size_y == want["size_y"]
        assert len(det.results) == len(want["results"])
        for result, want_result in zip(det.results, want["results"]):
            assert result.hypothesis.class_id == want_result["class_id"]
            assert result.hypothesis.score == want_result["score"]
            assert result.pose.pose.position.x == want_result["position_x"]
            assert list(result.pose.covariance) == want_result["covariance"]


def test_image_and_detections_cross_process_boundary(tmp_path: Path, ros_context: Any) -> None:
    rng = random.Random(20261121)
    height, width, padding = 37, 53, 5  # odd sizes and row padding: step != width * 3
    step = width * 3 + padding
    image_spec: dict[str, Any] = {
        "header": random_header(rng),
        "height": height,
        "width": width,
        "encoding": "rgb8",
        "is_bigendian": 0,
        "step": step,
    }
    image_data = rng.randbytes(step * height)
    detections_spec = random_detections(rng)
    spec_path = tmp_path / "messages.json"
    spec_path.write_text(json.dumps({"image": image_spec, "detections": detections_spec}))
    data_path = tmp_path / "image.bin"
    data_path.write_bytes(image_data)

    received: dict[str, Any] = {}
    node = rclpy.create_node("dds_exchange_test", context=ros_context)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "peer/image", lambda msg: received.setdefault("image", msg), qos)
    node.create_subscription(
        Detection2DArray, "peer/detections", lambda msg: received.setdefault("detections", msg), qos
    )
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    peer = subprocess.Popen(
        [sys.executable, str(PEER_SCRIPT), str(spec_path), str(data_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + RECEIVE_TIMEOUT_S
        while len(received) < 2 and time.monotonic() < deadline and peer.poll() is None:
            executor.spin_once(timeout_sec=0.1)
    finally:
        peer.terminate()
        try:
            output, _ = peer.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            peer.kill()
            output, _ = peer.communicate()
        executor.shutdown()
        node.destroy_node()

    assert set(received) == {"image", "detections"}, f"peer output:\n{output}"
    image = received["image"]
    assert_header(image.header, image_spec["header"])
    assert (image.height, image.width, image.step) == (height, width, step)
    assert image.encoding == "rgb8"
    assert image.is_bigendian == 0
    assert bytes(image.data) == image_data
    assert_detections(received["detections"], detections_spec)
    assert peer.returncode == 0, f"peer did not stop cleanly:\n{output}"
