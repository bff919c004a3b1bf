"""The detection node as a separate process, fed real images over DDS."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from node_harness import (
    NodeProcess,
    RosClient,
    TopicRecorder,
    diagnostic_values,
    image_message,
    qos,
    read_rgb,
)
from onnx_builders import rows_detector_spec
from trt_perception.decoders import DetectionFilter, filter_detections
from trt_perception.pipeline import Pipeline
from trt_perception.results import DetectionResult, Detections
from trt_perception.ros.cdr import MessageHeader
from trt_perception.ros.messages import detection_array
from trt_perception.ros.image_conversion import header_msg
from trt_perception.spec import load_model_spec

NODE = "/det_test/detection"


@pytest.fixture(scope="module")
def node(env: dict[str, str]) -> Iterator[NodeProcess]:
    process = NodeProcess(
        "detection_node",
        # Reliable input: the test's camera runs in the pytest process with Fast DDS's defaults, which
        # lose best-effort samples above ~512 KB such as these full-size images (docs/nodes.md, QoS).
        ["-r", "__ns:=/det_test", "-r", "image:=/camera/image", "-p", "input_reliability:=reliable",
         "-p", "diagnostics_period:=0.2"],
        env,
    )
    process.wait_for_output("centernet_mobilenetv3_coco")
    yield process
    assert process.stop(signal.SIGINT) == 0
    assert "Traceback" not in process.output


@pytest.fixture(scope="module")
def connection(client: RosClient) -> tuple[Any, TopicRecorder]:
    return client.camera_and_output(Image, "/camera/image", Detection2DArray, f"{NODE}/detections")


@pytest.fixture(scope="module")
def camera(connection: tuple[Any, TopicRecorder]) -> Any:
    return connection[0]


@pytest.fixture(scope="module")
def detections(connection: tuple[Any, TopicRecorder]) -> TopicRecorder:
    return connection[1]


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    pipe = Pipeline.from_spec(load_model_spec("centernet_mobilenetv3_coco"))
    yield pipe
    pipe.close()


def send_and_receive(
    camera: Any, recorder: TopicRecorder, rgb: np.ndarray, stamp: tuple[int, int]
) -> Detection2DArray:
    camera.publish(image_message(rgb, "rgb8", "camera_optical", stamp))
    return recorder.wait_for(lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == stamp)


def assert_matches(message: Detection2DArray, expected: DetectionResult, as_names: bool = False) -> None:
    assert len(message.detections) == len(expected.detections)
    ids = expected.names() if as_names else [str(i) for i in expected.detections.class_ids.tolist()]
    for detection, box, score, name in zip(
        message.detections, expected.detections.boxes, expected.detections.scores, ids
    ):
        x1, y1, x2, y2 = (float(v) for v in box)
        assert detection.header == message.header
        assert detection.id == ""
        assert len(detection.results) == 1
        assert detection.results[0].hypothesis.class_id == name
        assert detection.results[0].hypothesis.score == pytest.approx(float(score), abs=1e-6)
        assert detection.bbox.center.position.x == pytest.approx((x1 + x2) / 2, abs=1e-3)
        assert detection.bbox.center.position.y == pytest.approx((y1 + y2) / 2, abs=1e-3)
        assert detection.bbox.size_x == pytest.approx(x2 - x1, abs=1e-3)
        assert detection.bbox.size_y == pytest.approx(y2 - y1, abs=1e-3)


@pytest.mark.parametrize(
    "image_name, expected_class", [("motorcycle_left.png", "motorcycle"), ("coffee.png", "cup")]
)
def test_detections_match_pipeline_and_header_is_copied(
    camera: Any, detections: TopicRecorder, pipeline: Pipeline, image_name: str, expected_class: str
) -> None:
    rgb = read_rgb(image_name)
    stamp = (1700000100 + len(image_name), 987654321)
    message = send_and_receive(camera, detections, rgb, stamp)
    assert message.header.frame_id == "camera_optical"
    assert (message.header.stamp.sec, message.header.stamp.nanosec) == stamp
    expected = pipeline.run(rgb, "RGB")
    assert isinstance(expected, DetectionResult)
    assert expected_class in expected.names()
    assert_matches(message, expected)


def test_label_info_lists_coco_classes_for_late_subscriber(
    client: RosClient, detections: TopicRecorder
) -> None:
    info = client.record(LabelInfo, f"{NODE}/label_info", qos(reliable=True, depth=1, transient_local=True))
    message = info.wait_for(lambda m: True, timeout=10)
    names = load_model_spec("centernet_mobilenetv3_coco").labels
    assert [c.class_name for c in message.class_map] == list(names or ())
    assert message.threshold == pytest.approx(0.3)


def test_class_id_is_the_label_info_index_and_names_on_request(
    client: RosClient, camera: Any, detections: TopicRecorder
) -> None:
    rgb = read_rgb("motorcycle_left.png")
    info = client.record(LabelInfo, f"{NODE}/label_info", qos(reliable=True, depth=1, transient_local=True))
    names_by_id = {c.class_id: c.class_name for c in info.wait_for(lambda m: True, timeout=10).class_map}
    by_index = send_and_receive(camera, detections, rgb, (410, 1))
    ids = [d.results[0].hypothesis.class_id for d in by_index.detections]
    assert ids and all(i.isdigit() for i in ids)
    assert "motorcycle" in [names_by_id[int(i)] for i in ids]
    assert client.set_parameters(NODE, {"class_id_format": "name"})[0].successful
    by_name = send_and_receive(camera, detections, rgb, (410, 2))
    assert [d.results[0].hypothesis.class_id for d in by_name.detections] == [names_by_id[int(i)] for i in ids]
    rejected = client.set_parameters(NODE, {"class_id_format": "label"})[0]
    assert not rejected.successful and "class_id_format" in rejected.reason
    assert client.set_parameters(NODE, {"class_id_format": "index"})[0].successful


def test_runtime_score_threshold_and_class_filter(
    client: RosClient, camera: Any, detections: TopicRecorder, pipeline: Pipeline
) -> None:
    rgb = read_rgb("coffee.png")
    results = client.set_parameters(NODE, {"score_threshold": 0.45, "classes": "cup"})
    assert all(r.successful for r in results), [r.reason for r in results]
    message = send_and_receive(camera, detections, rgb, (300, 1))
    cup = pipeline.class_names.index("cup")
    pipeline.detection_filter = DetectionFilter(score_threshold=0.45, allowed_class_ids=frozenset({cup}))
    expected = pipeline.run(rgb, "RGB")
    assert len(expected.detections) >= 1
    assert_matches(message, expected)
    assert all(d.results[0].hypothesis.score >= 0.45 for d in message.detections)
    # ~/label_info is published again with the node's threshold (latched: a late subscriber sees it).
    info = client.record(LabelInfo, f"{NODE}/label_info", qos(reliable=True, depth=1, transient_local=True))
    assert info.wait_for(lambda m: True, timeout=10).threshold == pytest.approx(0.45)
    restored = client.set_parameters(NODE, {"score_threshold": 0.3, "classes": ""})
    assert all(r.successful for r in restored)


def test_invalid_runtime_values_are_rejected_with_reason(client: RosClient) -> None:
    threshold, classes, depth = client.set_parameters(
        NODE, {"score_threshold": 1.5, "classes": "unicorn", "input_depth": 3}
    )
    assert not threshold.successful and "score_threshold" in threshold.reason
    assert not classes.successful and "unicorn" in classes.reason
    assert not depth.successful and "read-only" in depth.reason


def test_no_work_while_nobody_listens(client: RosClient, camera: Any, detections: TopicRecorder) -> None:
    diagnostics = client.record(DiagnosticArray, "/diagnostics", qos(reliable=True))
    assert client.set_parameters(NODE, {"publish_detections": False})[0].successful
    camera.publish(image_message(read_rgb("coffee.png"), "rgb8", "camera", (400, 0)))

    def skipped(array: DiagnosticArray) -> bool:
        values = diagnostic_values(array, NODE)
        return values is not None and int(values["frames_skipped_no_subscribers"]) >= 1

    diagnostics.wait_for(skipped, timeout=10)
    assert client.set_parameters(NODE, {"publish_detections": True})[0].successful
    assert all(m.header.stamp.sec != 400 for m in detections.messages)


def test_overlay_draws_on_input(client: RosClient, camera: Any, detections: TopicRecorder) -> None:
    overlays = client.record(Image, f"{NODE}/overlay", qos(reliable=True))
    assert client.set_parameters(NODE, {"publish_overlay": True, "overlay_alpha": 1.0})[0].successful
    time.sleep(1.0)
    rgb = read_rgb("motorcycle_left.png")
    camera.publish(image_message(rgb, "rgb8", "camera", (500, 0)))
    overlay = overlays.wait_for(lambda m: m.header.stamp.sec == 500)
    pixels = np.frombuffer(bytes(overlay.data), np.uint8).reshape(overlay.height, overlay.width, 3)
    assert overlay.encoding == "rgb8" and pixels.shape == rgb.shape
    changed = np.any(pixels != rgb, axis=2)
    assert 0 < changed.mean() < 0.5  # box outlines and labels, not a different image


def test_sixteen_bit_image_with_an_odd_row_step_is_detected_like_an_unpadded_one(
    node: NodeProcess, camera: Any, detections: TopicRecorder
) -> None:
    # Rows padded by an odd number of bytes put 16-bit samples at odd addresses; the frame used to reach
    # OpenCV as an unaligned view and fail there ("frame processing failed: error: OpenCV(...) Step must
    # be a multiple of esz1", counted as a failure), while the same frame unpadded was answered. The
    # reference is the node's own answer to the unpadded frame: padding must change nothing.
    gray = cv2.cvtColor(read_rgb("motorcycle_left.png"), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    height, width = gray.shape
    answers = []
    for stamp, step in ((600, width * 2), (601, width * 2 + 1)):
        rows = np.zeros((height, step), np.uint8)
        rows[:, : width * 2] = gray.astype("<u2").view(np.uint8).reshape(height, width * 2)
        frame = Image(height=height, width=width, encoding="16UC1", is_bigendian=False, step=step, data=rows.tobytes())
        frame.header.frame_id = "camera_optical"
        frame.header.stamp.sec = stamp
        camera.publish(frame)
        answers.append(detections.wait_for(lambda m, stamp=stamp: m.header.stamp.sec == stamp, timeout=10))
    unpadded, odd = answers
    assert odd.detections
    assert [detection.results for detection in odd.detections] == [detection.results for detection in unpadded.detections]
    assert [detection.bbox for detection in odd.detections] == [detection.bbox for detection in unpadded.detections]
    assert "esz1" not in node.output


def test_best_effort_camera_against_reliable_input_is_reported(client: RosClient, node: NodeProcess) -> None:
    # This node subscribes reliable (input_reliability:=reliable): a best-effort camera cannot match,
    # and the node says which policy and parameter are involved.
    client.node.create_publisher(Image, "/camera/image", qos(reliable=False))
    node.wait_for_output("incompatible", timeout=15)
    assert "RELIABILITY" in node.output and "input_reliability='reliable'" in node.output


def test_subscriber_asking_for_a_durability_the_node_does_not_offer_is_told_the_real_fix(
    client: RosClient, node: NodeProcess
) -> None:
    # A transient-local subscriber (e.g. a tool that wants the last result on joining) cannot match the
    # volatile result publishers. The warning used to advise "fix: set output_reliability:=reliable",
    # the value the node already had, which changes nothing.
    client.node.create_subscription(
        Detection2DArray, f"{NODE}/detections", lambda message: None, qos(reliable=True, transient_local=True)
    )
    node.wait_for_output("(policy DURABILITY)", timeout=15)
    [line] = [line for line in node.output.splitlines() if "(policy DURABILITY)" in line]
    assert "volatile durability" in line and "change the peer's DURABILITY" in line
    assert "output_reliability" not in line


def test_detection_array_class_id_is_index_text_without_labels() -> None:
    header = header_msg(MessageHeader(12, 34, "cam"))
    found = Detections(np.array([[10, 20, 50, 80]], np.float32), np.array([0.5], np.float32), np.array([7]))
    message = detection_array(header, found, None)
    (detection,) = message.detections
    assert detection.results[0].hypothesis.class_id == "7"
    assert (detection.bbox.center.position.x, detection.bbox.center.position.y) == (30.0, 50.0)
    assert (detection.bbox.size_x, detection.bbox.size_y) == (40.0, 60.0)
    assert detection.header.frame_id == "cam" and detection.header.stamp.nanosec == 34
    assert detection_array(header, found, ("a", "b")).detections[0].results[0].hypothesis.class_id == "7"
    names = tuple(f"class {i}" for i in range(10))
    assert detection_array(header, found, names).detections[0].results[0].hypothesis.class_id == "7"
    assert detection_array(header, found, names, "name").detections[0].results[0].hypothesis.class_id == "class 7"
    # a name asked for but missing: the index
    assert detection_array(header, found, ("a",), "name").detections[0].results[0].hypothesis.class_id == "7"


def test_boxes_with_negative_width_or_height_are_left_out() -> None:
    boxes = np.array([[10, 20, 50, 80], [50, 20, 10, 80], [10, 80, 50, 20], [5, 5, 5, 5]], np.float32)
    found = Detections(boxes, np.array([0.9, 0.8, 0.7, 0.6], np.float32), np.array([1, 2, 3, 4]))
    kept = filter_detections(found, DetectionFilter(score_threshold=0.5, nms_iou=None))
    assert kept.inverted_left_out == 2  # what the node warns about
    np.testing.assert_array_equal(kept.boxes, boxes[[0, 3]])
    np.testing.assert_array_equal(kept.class_ids, [1, 4])
    sizes = [(d.bbox.size_x, d.bbox.size_y) for d in detection_array(header_msg(MessageHeader(0, 0, "")), kept, None).detections]
    assert sizes == [(40.0, 60.0), (0.0, 0.0)]


def test_frames_with_inverted_boxes_count_as_failed_in_diagnostics(env: dict[str, str], tmp_path: Any) -> None:
    # docs/nodes.md, Errors: a box with negative width or height is never published; the frame (its other
    # boxes published) counts as processed, not failed, and its warning is the last error (diagnostics
    # WARN). The node only logged a warning (throttled), and diagnostics stayed OK "running".
    rows = np.array([[[3.0, 1.0, 1.0, 3.0, 0.9, 0],    # x2 < x1: inverted
                      [0.0, 0.0, 2.0, 2.0, 0.7, 1]]], np.float32)
    spec = rows_detector_spec(tmp_path, rows, max_detections=5)
    name = "/det_inverted/detection"
    process = NodeProcess("detection_node", ["-r", "__ns:=/det_inverted", "-r", "image:=/camera/inverted",
                                             "-p", f"model_spec:={spec}",
                                             "-p", "diagnostics_period:=0.2"], env)
    ros = RosClient("det_inverted_client")
    try:
        process.wait_for_output("on /camera/inverted")
        camera, found = ros.camera_and_output(Image, "/camera/inverted", Detection2DArray, f"{name}/detections")
        diagnostics = ros.record(DiagnosticArray, "/diagnostics", qos(reliable=True))
        camera.publish(image_message(np.zeros((4, 4, 3), np.uint8), "rgb8", "cam", (700, 0)))
        message = found.wait_for(lambda m: m.header.stamp.sec == 700)
        assert [d.results[0].hypothesis.class_id for d in message.detections] == ["1"]  # the upright box only
        status = diagnostics.wait_for(lambda array: any(
            s.name.startswith(f"{name}:") and "negative width" in s.message for s in array.status
        ), timeout=10).status
        [ours] = [s for s in status if s.name.startswith(f"{name}:")]
        values = {item.key: item.value for item in ours.values}
        assert ours.level == b"\x01" and values["frames_failed"] == "0" and values["frames_processed"] == "1"
        assert "1 boxes with negative width or height" in values["last_error"]
    finally:
        ros.close()
        assert process.stop() == 0
