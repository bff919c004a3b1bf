"""The segmentation node with ``processing_device: gpu`` as a separate process, over DDS: labels, colour
mask and overlay made on the device, published and received as the CPU node would publish them.

Needs CuPy with a CUDA device (skipped elsewhere, like the other GPU tests). Two specs: the bundled
selfie spec (MediaPipe's corner sampling, which only the CPU preprocessor implements: GpuPipeline's
host fallback, then decoding, colours and overlay on the device) and the same model with half-pixel
sampling (the whole frame on the device: ``SegmentationFramePath``'s CUDA graphs).

The labels are held against the CPU pipeline (whose agreement with MediaPipe's own graph
test/test_author_parity.py checks), pixel for pixel (x86-64: see bench/check_gpu.py on aarch64). The colour mask is held against numpy indexing
of the spec's palette and the overlay against ``cv2.addWeighted``, both from the labels received.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from sensor_msgs.msg import Image

from node_harness import NodeProcess, RosClient, TopicRecorder, image_message, qos, read_rgb
from test_segmentation_node import received_pixels
from trt_perception.gpu import gpu_available
from trt_perception.pipeline import Pipeline
from trt_perception.spec import load_model_spec

pytestmark = pytest.mark.skipif(not gpu_available(), reason="CuPy with a CUDA device is not available")

NODE = "/seg_gpu/segmentation"
ALPHA = 0.4
OUTPUTS = ("labels", "color_mask", "overlay")


def half_pixel_spec(folder: Path) -> Path:
    """The bundled selfie spec with ``input.sampling: half_pixel`` (the GPU kernel's grid), as a file."""
    bundled = load_model_spec("selfie_segmentation")
    assert bundled.source is not None
    data = yaml.safe_load(bundled.source.read_text(encoding="utf-8"))
    data["model"] = str(bundled.model)
    data["input"]["sampling"] = "half_pixel"
    path = folder / "selfie_half_pixel.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["bundled", "half_pixel"])
def spec_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "bundled":
        return "selfie_segmentation"
    return str(half_pixel_spec(tmp_path_factory.mktemp("gpu_node_spec")))


@pytest.fixture(scope="module")
def node(env: dict[str, str], spec_path: str) -> Iterator[NodeProcess]:
    process = NodeProcess(
        "segmentation_node",
        ["-r", "__ns:=/seg_gpu", "-r", "image:=/camera_gpu/image", "-p", f"model_spec:={spec_path}",
         "-p", "processing_device:=gpu", "-p", "publish_color_mask:=true", "-p", "publish_overlay:=true",
         "-p", f"overlay_alpha:={ALPHA}"],
        env,
    )
    process.wait_for_output("gpu pre/post-processing", timeout=60)
    yield process
    process.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def connected(node: NodeProcess, client: RosClient) -> tuple[Any, dict[str, TopicRecorder]]:
    camera = client.node.create_publisher(Image, "/camera_gpu/image", qos(reliable=True))
    recorders = {name: client.record(Image, f"{NODE}/{name}", qos(reliable=True)) for name in OUTPUTS}
    client.wait_for_subscribers(camera)
    for name in OUTPUTS:
        client.wait_for_publishers(f"{NODE}/{name}")
    time.sleep(1.0)  # the node must see our subscriptions too, or it skips work (lazy)
    return camera, recorders


# Frames below ~512 KB: the test's camera runs with Fast DDS's defaults (see test_segmentation_node.py).
FRAMES = {
    "rgb8": lambda: np.ascontiguousarray(read_rgb("astronaut.png")[:384, 64:448]),
    "bgr8": lambda: np.ascontiguousarray(cv2.resize(read_rgb("astronaut.png"), (400, 300))[:, :, ::-1]),
}


def assert_labels_as_cpu(labels: np.ndarray, rgb: np.ndarray, spec_path: str) -> None:
    """``labels`` equal the CPU pipeline's, pixel for pixel."""
    cpu = Pipeline.from_spec(load_model_spec(spec_path))
    try:
        expected = cpu.run(rgb, "RGB").labels
    finally:
        cpu.close()
    assert labels.shape == expected.shape
    assert np.array_equal(labels, expected), f"{np.count_nonzero(labels != expected)} labels differ"
    assert 0.05 < expected.mean() < 0.95  # a person and background in the frame


@pytest.mark.parametrize("encoding", sorted(FRAMES))
def test_gpu_node_publishes_what_the_cpu_path_computes(
    node: NodeProcess, connected: tuple[Any, dict[str, TopicRecorder]], spec_path: str, encoding: str
) -> None:
    camera, recorders = connected
    pixels = FRAMES[encoding]()
    stamp = (40 + sorted(FRAMES).index(encoding), 7)
    camera.publish(image_message(pixels, encoding, "gpu_camera", stamp))
    received = {
        name: recorder.wait_for(lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == stamp, timeout=30)
        for name, recorder in recorders.items()
    }
    assert {message.header.frame_id for message in received.values()} == {"gpu_camera"}
    assert [received[name].encoding for name in OUTPUTS] == ["mono8", "rgb8", "rgb8"]

    rgb = np.ascontiguousarray(pixels if encoding == "rgb8" else pixels[:, :, ::-1])
    labels = received_pixels(received["labels"], 1)
    assert_labels_as_cpu(labels, rgb, spec_path)
    colours = np.asarray(load_model_spec(spec_path).palette, np.uint8)[labels]
    np.testing.assert_array_equal(received_pixels(received["color_mask"], 3), colours)
    np.testing.assert_array_equal(received_pixels(received["overlay"], 3), cv2.addWeighted(rgb, 1 - ALPHA, colours, ALPHA, 0.0))
    assert node.process.poll() is None
