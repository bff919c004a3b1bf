"""Several cameras of different sizes and rates into one segmentation node, over DDS."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image

from batch_models import batched_selfie_model
from node_harness import (
    NodeProcess,
    RosClient,
    TopicRecorder,
    camera_frame,
    image_message,
    qos,
)
from trt_perception.pipeline import Pipeline
from trt_perception.spec import load_model_spec

NODE = "/mc_test/segmentation"


class Camera:
    """One test camera: name, input topic, image (rows x columns below the ~512 KB a default Fast DDS
    sender delivers best effort) and frame rate."""

    def __init__(self, name: str, topic: str, image: str, size: tuple[int, int], rate_hz: float) -> None:
        self.name, self.topic, self.rate_hz = name, topic, rate_hz
        self.pixels = camera_frame(image, *size)
        self.sent = 0


def cameras() -> list[Camera]:
    return [
        Camera("front", "/mc_cameras/front", "astronaut.png", (320, 400), 60.0),  # remapped input
        Camera("rear", "/mc_test/rear/image", "coffee.png", (240, 320), 10.0),
        Camera("left", "/mc_test/left/image", "motorcycle_left.png", (180, 320), 4.0),
    ]


# fixed_batch_2: two cameras per inference, and a lone waiting camera's frame in a zero-filled batch
@pytest.fixture(scope="module", params=["dynamic_batch", "batch_1", "fixed_batch_2"])
def node(request: pytest.FixtureRequest, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    model_args = []
    if request.param != "batch_1":
        batch = {"dynamic_batch": None, "fixed_batch_2": 2}[request.param]
        model = batched_selfie_model(tmp_path_factory.mktemp("models") / f"selfie_{request.param}.onnx", batch)
        model_args = ["-p", f"model_path:={model}"]
    process = NodeProcess(
        "segmentation_node",
        [
            "-r", "__ns:=/mc_test", "-r", "front/image:=/mc_cameras/front", "-p", "cameras:=[front, rear, left]",
            "-p", "diagnostics_period:=0.2", "-p", "stall_timeout:=1.0", *model_args,
        ],
        env,
    )
    process.wait_for_output("selfie_segmentation")
    yield process
    assert process.stop(signal.SIGINT) == 0
    assert "Traceback" not in process.output


@pytest.fixture(scope="module")
def expected_labels() -> dict[str, np.ndarray]:
    """Each camera's labels from the bundled model run on its image alone."""
    pipeline = Pipeline.from_spec(load_model_spec("selfie_segmentation"))
    try:
        return {camera.name: pipeline.run(camera.pixels, "RGB").labels.copy() for camera in cameras()}
    finally:
        pipeline.close()


def publish_at_rate(publisher: Any, camera: Camera, index: int, duration: float) -> None:
    period = 1.0 / camera.rate_hz
    start = time.monotonic()
    while time.monotonic() - start < duration:
        camera.sent += 1
        publisher.publish(image_message(camera.pixels, "rgb8", camera.name, (index, camera.sent)))
        time.sleep(max(0.0, start + camera.sent * period - time.monotonic()))


def test_each_camera_gets_its_own_results_with_its_header(
    node: NodeProcess, client: RosClient, expected_labels: dict[str, np.ndarray]
) -> None:
    test_cameras = cameras()
    publishers = [client.node.create_publisher(Image, camera.topic, qos(reliable=True)) for camera in test_cameras]
    recorders: dict[str, TopicRecorder] = {
        camera.name: client.record(Image, f"{NODE}/{camera.name}/labels", qos(reliable=True, depth=100))
        for camera in test_cameras
    }
    diagnostics = client.record(DiagnosticArray, "/diagnostics", qos(reliable=False, depth=100))
    for publisher, camera in zip(publishers, test_cameras):
        client.wait_for_subscribers(publisher)
        client.wait_for_publishers(f"{NODE}/{camera.name}/labels")
    time.sleep(1.0)  # the node must see our subscriptions too, or it skips work (lazy)

    threads = [
        threading.Thread(target=publish_at_rate, args=(publisher, camera, index, 2.5))
        for index, (publisher, camera) in enumerate(zip(publishers, test_cameras))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(1.0)  # the last frames' results

    for index, camera in enumerate(test_cameras):
        received = recorders[camera.name].messages
        assert received, f"no labels for {camera.name}"
        for message in received:
            assert message.header.frame_id == camera.name
            assert message.header.stamp.sec == index and 1 <= message.header.stamp.nanosec <= camera.sent
            assert (message.height, message.width, message.encoding) == (*camera.pixels.shape[:2], "mono8")
            labels = np.frombuffer(bytes(message.data), np.uint8).reshape(message.height, message.width)
            np.testing.assert_array_equal(labels, expected_labels[camera.name])
    # diagnostics: one status per camera with its own counts (frames lost on the way are never
    # received), and the node's totals
    statuses = per_camera_diagnostics(diagnostics)
    for camera in test_cameras:
        values = statuses[camera.name]
        assert values["camera"] == camera.name
        assert values["input_topic"] == camera.topic
        assert camera.sent * 0.8 <= int(values["frames_received"]) <= camera.sent
        assert int(values["frames_processed"]) == len(recorders[camera.name].messages)
        assert int(values["frames_dropped"]) == int(values["frames_received"]) - int(values["frames_processed"])
    total = statuses[""]
    for key in ("frames_received", "frames_processed", "frames_dropped"):
        assert int(total[key]) == sum(int(statuses[camera.name][key]) for camera in test_cameras)
    # fair under load: the fast camera cannot starve the slow ones; a slow camera loses a frame only
    # when the node stalls for a whole period of it, which costs the fast camera more frames. Counts,
    # not fractions: a 100 ms stall costs rear 1 frame of 25 (4 %) and front 5 of 150 (3.3 %).
    fast_drops = int(statuses["front"]["frames_dropped"])
    for camera in ("rear", "left"):
        assert int(statuses[camera]["frames_dropped"]) <= fast_drops, statuses


def per_camera_diagnostics(recorder: TopicRecorder) -> dict[str, dict[str, str]]:
    """The node's statuses (by camera name; "" for the node's totals) once every received frame is
    processed or dropped."""
    def settled(values: dict[str, str]) -> bool:
        return int(values["frames_received"]) == int(values["frames_processed"]) + int(values["frames_dropped"])

    def complete(array: DiagnosticArray) -> bool:
        mine = [{item.key: item.value for item in s.values} for s in array.status if s.name.startswith(f"{NODE}:")]
        return len(mine) == 4 and all(settled(values) for values in mine) and int(mine[0]["frames_received"]) > 0

    first = len(recorder.messages)  # statuses sent from now on, after the cameras stopped
    deadline = time.monotonic() + 10.0
    while not any(complete(array) for array in recorder.messages[first:]):
        assert time.monotonic() < deadline, "no settled diagnostics"
        time.sleep(0.1)
    array = [array for array in recorder.messages[first:] if complete(array)][-1]
    statuses = {}
    for status in array.status:
        values = {item.key: item.value for item in status.values}
        statuses[values.get("camera", "")] = values
    return statuses


def test_a_camera_whose_publisher_sends_nothing_is_an_error_in_its_own_status(node: NodeProcess, client: RosClient) -> None:
    front, rear, left = cameras()
    publishers = [client.node.create_publisher(Image, camera.topic, qos(reliable=True)) for camera in (front, rear, left)]
    diagnostics = client.record(DiagnosticArray, "/diagnostics", qos(reliable=False, depth=100))
    for publisher in publishers:
        client.wait_for_subscribers(publisher)
    # front keeps sending at 10 Hz for more than stall_timeout (1 s); rear and left have publishers, send nothing
    front.rate_hz = 10.0
    publish_at_rate(publishers[0], front, 0, 2.5)
    array = [array for array in diagnostics.messages if any(s.name.startswith(f"{NODE}:") for s in array.status)][-1]
    statuses = {status.name.removeprefix(f"{NODE}: segmentation").strip(): status for status in array.status}
    for camera in ("rear", "left"):
        status = statuses[f"camera {camera}"]
        assert status.level == DiagnosticStatus.ERROR, status
        assert status.message.startswith("no frame for ") and "publishers exist" in status.message, status
    assert statuses["camera front"].level != DiagnosticStatus.ERROR, statuses["camera front"]
    assert "no frame" not in statuses["camera front"].message
    whole = statuses[""]
    assert whole.level == DiagnosticStatus.ERROR
    assert "camera rear: no frame for " in whole.message and "camera left: no frame for " in whole.message
    assert "camera front: no frame" not in whole.message
