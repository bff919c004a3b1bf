"""The detection node with ``processing_device: gpu`` as a separate process, over DDS: preprocessing
on the device, the model's outputs decoded and filtered as ``GpuPipeline`` does, detections published
as the CPU node publishes them.

Needs CuPy with a CUDA device (skipped elsewhere, like the other GPU tests). Two models:
- YOLOv3-tiny (raw heads with anchors, the shared 35 MB model) on Darknet's sample photos, held against
  OpenCV's Darknet importer on the original cfg + weights (test/test_real_detectors.py's reference);
- the bundled CenterNet, held against the CPU pipeline (whose behaviour test_detection_node.py checks).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from node_harness import NodeProcess, RosClient, TopicRecorder, read_rgb
from test_detection_node import assert_matches, send_and_receive
from test_real_detectors import FIXTURES, YOLO_REFERENCE, assert_darknet_detections, bundled_pipeline, shared_model
from trt_perception.gpu import gpu_available
from trt_perception.pipeline import Pipeline
from trt_perception.results import DetectionResult
from trt_perception.spec import load_model_spec

pytestmark = pytest.mark.skipif(not gpu_available(), reason="CuPy with a CUDA device is not available")

NAMESPACE = "/det_gpu"
SPECS = {"yolov3_tiny_coco": "yolov3_tiny_coco.onnx", "centernet_mobilenetv3_coco": None}


@pytest.fixture(scope="module", params=sorted(SPECS))
def spec_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def node(env: dict[str, str], spec_name: str) -> Iterator[NodeProcess]:
    model = SPECS[spec_name]
    process = NodeProcess(
        "detection_node",
        # Reliable input: the test's camera runs with Fast DDS's defaults (see test_detection_node.py).
        ["-r", f"__ns:={NAMESPACE}", "-r", f"image:={NAMESPACE}/camera", "-p", f"model_spec:={spec_name}",
         "-p", "processing_device:=gpu", "-p", "input_reliability:=reliable",
         *(["-p", f"model_path:={shared_model(model)}"] if model else [])],
        env,
    )
    process.wait_for_output("gpu pre/post-processing", timeout=60)
    yield process
    assert process.stop(signal.SIGINT) == 0
    assert "Traceback" not in process.output


@pytest.fixture(scope="module")
def connection(node: NodeProcess, client: RosClient) -> tuple[Any, TopicRecorder]:
    return client.camera_and_output(Image, f"{NAMESPACE}/camera", Detection2DArray, f"{NAMESPACE}/detection/detections")


def message_arrays(message: Detection2DArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xyxy boxes, scores and class ids of a ``Detection2DArray`` (class ids as indices)."""
    boxes, scores, class_ids = [], [], []
    for detection in message.detections:
        centre, (width, height) = detection.bbox.center.position, (detection.bbox.size_x, detection.bbox.size_y)
        boxes.append([centre.x - width / 2, centre.y - height / 2, centre.x + width / 2, centre.y + height / 2])
        scores.append(detection.results[0].hypothesis.score)
        class_ids.append(int(detection.results[0].hypothesis.class_id))
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores), np.asarray(class_ids, np.int64)


def cpu_result(spec_name: str, rgb: np.ndarray) -> DetectionResult:
    """What the CPU pipeline detects in ``rgb`` with the same spec and model."""
    model = SPECS[spec_name]
    if model is not None:  # the verified shared model, in test_real_detectors' cached pipeline
        result = bundled_pipeline(spec_name, model).run(rgb, "RGB")
    else:
        cpu = Pipeline.from_spec(load_model_spec(spec_name))
        try:
            result = cpu.run(rgb, "RGB")
        finally:
            cpu.close()
    assert isinstance(result, DetectionResult)
    return result


@pytest.mark.parametrize("image", sorted(YOLO_REFERENCE["images"]))
def test_gpu_node_gives_the_reference_detections(
    connection: tuple[Any, TopicRecorder], spec_name: str, image: str
) -> None:
    bgr = cv2.imread(str(FIXTURES / "images" / image), cv2.IMREAD_COLOR)
    assert bgr is not None, image
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    message = send_and_receive(*connection, rgb, (60 + sorted(YOLO_REFERENCE["images"]).index(image), 3))
    assert message.header.frame_id == "camera_optical"
    if spec_name == "yolov3_tiny_coco":
        assert_darknet_detections(image, *message_arrays(message), rgb.shape[:2])
    else:
        expected = cpu_result(spec_name, rgb)
        assert len(expected.detections) >= 1
        assert_matches(message, expected)


def test_gpu_node_serves_another_frame_size_as_the_cpu_pipeline(
    connection: tuple[Any, TopicRecorder], spec_name: str
) -> None:
    """A frame of another size after the first ones (new device buffers): the CPU pipeline's detections."""
    rgb = np.ascontiguousarray(read_rgb("dog.jpg")[40:560, 20:720])
    message = send_and_receive(*connection, rgb, (70, 1))
    assert message.header.frame_id == "camera_optical"
    expected = cpu_result(spec_name, rgb)
    assert "dog" in expected.names()
    assert_matches(message, expected)
