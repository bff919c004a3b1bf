"""The segmentation node as a separate process, fed real images over DDS."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import LabelInfo

from onnx import TensorProto, helper, numpy_helper

from node_harness import (
    IMAGES,
    NodeProcess,
    RosClient,
    TopicRecorder,
    camera_frame,
    compressed_message,
    diagnostic_values,
    image_message,
    qos,
    read_rgb,
    wait_for_diagnostics,
)
from camera_encoding_samples import BAYER_ENCODINGS, YUV_ENCODINGS, pack_bayer, pack_yuv
from onnx_builders import build_model
from trt_perception import visualize
from trt_perception.gpu import gpu_available
from trt_perception.pipeline import Pipeline
from trt_perception.ros.dds_profile import PROFILE_VARIABLES, large_images_profile
from trt_perception.spec import load_model_spec

NODE = "/seg_test/segmentation"
CAMERA_PROCESS = Path(__file__).with_name("camera_process.py")


@pytest.fixture(scope="module")
def node(env: dict[str, str]) -> Iterator[NodeProcess]:
    process = NodeProcess(
        "segmentation_node",
        ["-r", "__ns:=/seg_test", "-r", "image:=/camera/image", "-p", "diagnostics_period:=0.2"],
        env,
    )
    process.wait_for_output("selfie_segmentation")
    yield process
    process.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def connection(client: RosClient) -> tuple[Any, TopicRecorder]:
    # A reliable camera: the node subscribes best effort, which accepts reliable publishers too.
    return client.camera_and_output(Image, "/camera/image", Image, f"{NODE}/labels")


@pytest.fixture(scope="module")
def camera(connection: tuple[Any, TopicRecorder]) -> Any:
    return connection[0]


@pytest.fixture(scope="module")
def labels(connection: tuple[Any, TopicRecorder]) -> TopicRecorder:
    return connection[1]


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    pipe = Pipeline.from_spec(load_model_spec("selfie_segmentation"))
    yield pipe
    pipe.close()


def astronaut_rgb() -> np.ndarray:
    """The person in astronaut.png, 384x384 (442 KB as rgb8). The test's camera (``client``) runs in
    the pytest process with Fast DDS's defaults (Fast DDS reads the profile variables once per process,
    and other test modules start participants first); it reaches the node best effort, so its samples
    stay below the ~512 KB above which a default sender loses them (docs/nodes.md, QoS)."""
    return np.ascontiguousarray(read_rgb("astronaut.png")[:384, 64:448])


def received_pixels(message: Image, channels: int, dtype: type = np.uint8) -> np.ndarray:
    pixels: np.ndarray = np.frombuffer(bytes(message.data), dtype=dtype).reshape(message.height, message.width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def send_and_receive(camera: Any, recorder: TopicRecorder, message: Image | CompressedImage) -> Image:
    stamp = (message.header.stamp.sec, message.header.stamp.nanosec)
    camera.publish(message)
    return recorder.wait_for(lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == stamp)


def test_labels_equal_pipeline_output_and_header_is_copied(
    camera: Any, labels: TopicRecorder, pipeline: Pipeline
) -> None:
    rgb = astronaut_rgb()
    expected = pipeline.run(rgb, "RGB").labels
    message = image_message(rgb, "rgb8", "camera_optical", (1700000000, 123456789))
    received = send_and_receive(camera, labels, message)
    assert received.header.frame_id == "camera_optical"
    assert (received.header.stamp.sec, received.header.stamp.nanosec) == (1700000000, 123456789)
    assert received.encoding == "mono8"
    assert (received.height, received.width) == rgb.shape[:2]
    np.testing.assert_array_equal(received_pixels(received, 1), expected)
    assert 0.05 < expected.mean() < 0.95  # a real person mask, not an empty or full image


def test_bgr_input_with_row_padding_gives_same_labels(
    camera: Any, labels: TopicRecorder, pipeline: Pipeline
) -> None:
    rgb = astronaut_rgb()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    padded = np.zeros((bgr.shape[0], bgr.shape[1] * 3 + 16), np.uint8)
    padded[:, : bgr.shape[1] * 3] = bgr.reshape(bgr.shape[0], -1)
    message = image_message(bgr, "bgr8", "camera", (5, 6))
    message.step = padded.shape[1]
    message.data = padded.tobytes()
    received = send_and_receive(camera, labels, message)
    np.testing.assert_array_equal(received_pixels(received, 1), pipeline.run(rgb, "RGB").labels)


@pytest.mark.parametrize("encoding", YUV_ENCODINGS + BAYER_ENCODINGS)
def test_camera_encodings_give_the_labels_of_opencvs_conversion(
    camera: Any, labels: TopicRecorder, pipeline: Pipeline, encoding: str
) -> None:
    rgb = astronaut_rgb()
    rows = pack_bayer(rgb, encoding) if encoding.startswith("bayer") else pack_yuv(rgb, encoding)
    code = {
        "yuv422": cv2.COLOR_YUV2BGR_UYVY, "uyvy": cv2.COLOR_YUV2BGR_UYVY, "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUYV,
        "yuyv": cv2.COLOR_YUV2BGR_YUYV, "nv21": cv2.COLOR_YUV2BGR_NV21, "nv12": cv2.COLOR_YUV2BGR_NV12,
        "rggb": cv2.COLOR_BayerBG2BGR, "bggr": cv2.COLOR_BayerRG2BGR, "gbrg": cv2.COLOR_BayerGR2BGR,
        "grbg": cv2.COLOR_BayerGB2BGR,
    }[encoding[6:10] if encoding.startswith("bayer") else encoding]
    source = rows.reshape(rgb.shape[0], rgb.shape[1], 2) if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") else rows
    if encoding.endswith("16"):
        source = rows.view("<u2")
    expected = pipeline.run(cv2.cvtColor(np.ascontiguousarray(source), code), "BGR").labels
    stamp = (7, (YUV_ENCODINGS + BAYER_ENCODINGS).index(encoding))
    message = image_message(rgb, "rgb8", "camera", stamp)
    message.encoding, message.step, message.data = encoding, rows.shape[1], rows.tobytes()
    received = send_and_receive(camera, labels, message)
    np.testing.assert_array_equal(received_pixels(received, 1), expected)
    assert 0.05 < expected.mean() < 0.95


def test_label_info_reaches_late_subscriber(client: RosClient, labels: TopicRecorder) -> None:
    # The node published LabelInfo once at start-up; transient-local durability replays it.
    time.sleep(0.5)
    info = client.record(LabelInfo, f"{NODE}/label_info", qos(reliable=True, depth=1, transient_local=True))
    message = info.wait_for(lambda m: True, timeout=10)
    assert [(c.class_id, c.class_name) for c in message.class_map] == [(0, "background"), (1, "person")]


def test_best_effort_subscriber_receives_reliable_output(
    client: RosClient, camera: Any, labels: TopicRecorder
) -> None:
    best_effort = client.record(Image, f"{NODE}/labels", qos(reliable=False))
    time.sleep(1.0)  # discovery of the new subscription
    send_and_receive(camera, labels, image_message(astronaut_rgb(), "rgb8", "camera", (7, 8)))
    best_effort.wait_for(lambda m: m.header.stamp.sec == 7)


def test_camera_sized_best_effort_frames_are_all_answered(
    env: dict[str, str], client: RosClient, labels: TopicRecorder, pipeline: Pipeline
) -> None:
    # The node's default QoS (best effort) and a best-effort camera in its own process that uses the
    # shipped Fast DDS profile, as docs/nodes.md asks of cameras: the sender's shared-memory segment
    # decides whether large samples arrive, the node uses the profile by default.
    diagnostics = client.record(DiagnosticArray, "/diagnostics", qos(reliable=True))
    first = diagnostic_values(diagnostics.wait_for(lambda a: diagnostic_values(a, NODE) is not None), NODE)
    assert first is not None
    received_before = int(first["frames_received"])
    profile = str(large_images_profile())
    sizes, frames, first_sec = [(480, 640), (720, 1280)], 3, 300
    camera = subprocess.run(
        [sys.executable, str(CAMERA_PROCESS), "/camera/image", "astronaut.png",
         ",".join(f"{height}x{width}" for height, width in sizes), str(frames), "5", str(first_sec)],
        env={**env, **{name: profile for name in PROFILE_VARIABLES}}, timeout=90,
    )
    assert camera.returncode == 0
    for index, (height, width) in enumerate(sizes):
        last_frame = (first_sec + index, frames - 1)
        message = labels.wait_for(lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == last_frame)
        expected = pipeline.run(camera_frame("astronaut.png", height, width), "RGB").labels
        np.testing.assert_array_equal(received_pixels(message, 1), expected)

    def all_received(array: DiagnosticArray) -> bool:
        values = diagnostic_values(array, NODE)
        return values is not None and int(values["frames_received"]) >= received_before + len(sizes) * frames

    values = diagnostic_values(diagnostics.wait_for(all_received, timeout=10), NODE)
    assert values is not None and int(values["frames_received"]) == received_before + len(sizes) * frames


def test_runtime_switch_enables_color_mask(
    client: RosClient, camera: Any, labels: TopicRecorder, pipeline: Pipeline
) -> None:
    masks = client.record(Image, f"{NODE}/color_mask", qos(reliable=True))
    results = client.set_parameters(NODE, {"publish_color_mask": True})
    assert results[0].successful
    time.sleep(1.0)
    rgb = astronaut_rgb()
    camera.publish(image_message(rgb, "rgb8", "camera", (9, 10)))
    mask = masks.wait_for(lambda m: m.header.stamp.sec == 9)
    assert mask.encoding == "rgb8"
    spec = load_model_spec("selfie_segmentation")
    expected = visualize.colorize(pipeline.run(rgb, "RGB").labels, visualize.make_palette(spec.palette, 2))
    np.testing.assert_array_equal(received_pixels(mask, 3), expected)


def test_invalid_parameter_values_are_rejected_with_reason(client: RosClient) -> None:
    alpha, resolution = client.set_parameters(NODE, {"overlay_alpha": 1.5, "output_resolution": "network"})
    assert not alpha.successful and "overlay_alpha" in alpha.reason
    assert not resolution.successful and "read-only" in resolution.reason


@pytest.mark.parametrize(
    "bad_message, problem",
    [
        (lambda rgb: image_message(rgb, "yuv422_weird", "camera", (100, 1)), "unknown image encoding"),
        (lambda rgb: _with(image_message(rgb, "rgb8", "camera", (100, 2)), step=10), "step 10 is shorter"),
        (lambda rgb: _with(image_message(rgb, "rgb8", "camera", (100, 3)), data=rgb.tobytes()[:1000]),
         "truncated"),
        (lambda rgb: _with(image_message(rgb, "rgb8", "camera", (100, 4)), height=0, width=0, step=0, data=b""),
         "zero size"),
    ],
)
def test_bad_input_is_skipped_and_next_frame_answered(
    node: NodeProcess,
    camera: Any,
    labels: TopicRecorder,
    bad_message: Callable[[np.ndarray], Image],
    problem: str,
) -> None:
    rgb = astronaut_rgb()
    message = bad_message(rgb)
    camera.publish(message)
    node.wait_for_output(problem, timeout=10)
    send_and_receive(camera, labels, image_message(rgb, "rgb8", "camera", (101, message.header.stamp.nanosec)))
    assert node.process.poll() is None


def test_repeated_bad_input_warning_is_throttled_by_kind(env: dict[str, str]) -> None:
    # Reliable input (guaranteed delivery) and each bad frame sent only after the node counted the one
    # before (no frame replaced unprocessed); warning_period long enough to hold on a slow machine.
    process = NodeProcess(
        "segmentation_node",
        ["-r", "__ns:=/seg_throttle", "-r", "image:=/camera/throttle", "-p", "input_reliability:=reliable",
         "-p", "warning_period:=3600.0", "-p", "diagnostics_period:=0.1"],
        env,
    )
    ros = RosClient("seg_throttle_client")
    node = "/seg_throttle/segmentation"
    try:
        process.wait_for_output("selfie_segmentation")
        camera, labels = ros.camera_and_output(Image, "/camera/throttle", Image, f"{node}/labels")
        diagnostics = ros.record(DiagnosticArray, "/diagnostics", qos(reliable=True))
        rgb = astronaut_rgb()
        sent = 0

        def send_bad(message: Image) -> None:
            nonlocal sent
            camera.publish(message)
            sent += 1

            def counted(array: DiagnosticArray) -> bool:
                values = diagnostic_values(array, node)
                return values is not None and int(values["frames_bad_input"]) >= sent

            diagnostics.wait_for(counted)

        sizes = (1000, 2000, 3000, 4000)
        for index, size in enumerate(sizes):  # one kind of problem, a different byte count each time
            send_bad(_with(image_message(rgb, "rgb8", "camera", (120, index)), data=rgb.tobytes()[:size]))
        send_bad(image_message(rgb, "throttle_test_encoding", "camera", (121, 0)))  # another kind
        send_and_receive(camera, labels, image_message(rgb, "rgb8", "camera", (122, 0)))
        output = process.output
        assert output.count("truncated") == 1 and f"truncated: {sizes[0]} bytes" in output
        assert output.count("throttle_test_encoding") == 1
        assert all(r.successful for r in ros.set_parameters(node, {"warning_period": 0.0}))
        send_bad(_with(image_message(rgb, "rgb8", "camera", (123, 0)), data=rgb.tobytes()[:5000]))
        process.wait_for_output(
            f"truncated: 5000 bytes, step {rgb.shape[1] * 3} x height {rgb.shape[0]} needs {rgb.nbytes} "
            f"({len(sizes) - 1} more since last report)"
        )
    finally:
        ros.close()
        assert process.stop() == 0


def test_overlay_with_alpha_one_is_the_colour_mask(
    client: RosClient, camera: Any, labels: TopicRecorder
) -> None:
    overlays = client.record(Image, f"{NODE}/overlay", qos(reliable=True))
    masks = client.record(Image, f"{NODE}/color_mask", qos(reliable=True))
    assert all(r.successful for r in client.set_parameters(NODE, {"publish_overlay": True, "overlay_alpha": 1.0}))
    time.sleep(1.0)
    camera.publish(image_message(astronaut_rgb(), "rgb8", "camera", (110, 0)))
    overlay = overlays.wait_for(lambda m: m.header.stamp.sec == 110)
    mask = masks.wait_for(lambda m: m.header.stamp.sec == 110)
    np.testing.assert_array_equal(received_pixels(overlay, 3), received_pixels(mask, 3))
    assert all(r.successful for r in client.set_parameters(NODE, {"overlay_alpha": 0.0}))
    camera.publish(image_message(astronaut_rgb(), "rgb8", "camera", (111, 0)))
    overlay = overlays.wait_for(lambda m: m.header.stamp.sec == 111)
    np.testing.assert_array_equal(received_pixels(overlay, 3), astronaut_rgb())


def _with(message: Image, **fields: Any) -> Image:
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def test_flood_drops_frames_keeps_memory_flat_and_counts_in_diagnostics(
    client: RosClient, node: NodeProcess, camera: Any, labels
) -> None:
    diagnostics = client.record(DiagnosticArray, "/diagnostics", qos(reliable=True))
    frame = image_message(astronaut_rgb(), "rgb8", "camera", (0, 0))

    def flood(count: int, first_sec: int) -> None:
        for index in range(count):
            frame.header.stamp.sec = first_sec + index
            camera.publish(frame)
            time.sleep(0.002)

    flood(30, 1000)  # warm-up: allocator and DDS buffers reach their working size
    labels.wait_for(lambda m: m.header.stamp.sec >= 1000)
    time.sleep(1.0)
    rss_before = node.rss_bytes()
    # The counters are cumulative over the module's tests: measure the flood as a difference from a
    # status the idle node published after the warm-up.
    baseline = wait_for_diagnostics(diagnostics, NODE, lambda values: True, start=len(diagnostics.messages))
    flood(100, 2000)
    last = labels.wait_for(lambda m: m.header.stamp.sec >= 2000)
    time.sleep(1.5)
    rss_after = node.rss_bytes()
    assert node.process.poll() is None
    # Growth per frame would show as 100 x ~0.5 MB; allow noise well below that.
    assert rss_after - rss_before < 20 * 1024 * 1024, (rss_before, rss_after)
    assert last.header.stamp.sec >= 2000

    def flood_counts(values: dict[str, str]) -> dict[str, int]:
        names = ("frames_received", "frames_processed", "frames_dropped")
        return {name: int(values[name]) - int(baseline[name]) for name in names}

    def settled(values: dict[str, str]) -> bool:
        counts = flood_counts(values)
        return counts["frames_processed"] + counts["frames_dropped"] == counts["frames_received"] > 0

    values = wait_for_diagnostics(diagnostics, NODE, settled, timeout=15, start=len(diagnostics.messages))
    counts = flood_counts(values)
    assert counts["frames_received"] <= 100
    assert counts["frames_dropped"] > 0
    assert counts["frames_processed"] < counts["frames_received"]  # frames were dropped, not queued
    for stage in ("decode", "preprocess", "inference", "postprocess", "publish"):
        assert float(values[f"latency_{stage}_ms_mean"]) > 0.0, stage
    assert values["last_error"]  # the bad-input test before left its message


def test_sigint_shuts_down_cleanly(node: NodeProcess) -> None:
    assert node.stop(signal.SIGINT) == 0
    assert "Traceback" not in node.output


def test_sigterm_shuts_down_cleanly(env: dict[str, str]) -> None:
    process = NodeProcess("segmentation_node", ["-r", "__ns:=/seg_term"], env)
    process.wait_for_output("selfie_segmentation")
    assert process.stop(signal.SIGTERM) == 0
    assert "Traceback" not in process.output


@pytest.mark.parametrize(
    "case, expected",
    [("missing", "not found"), ("corrupt", "cannot load ONNX model"), ("bad_alpha", "overlay_alpha out of range"),
     ("gpu", "processing_device 'gpu': the GPU pre/post-processing path needs CuPy"),
     ("int8", "precision 'int8' needs the parameter calibration_images")],
)
def test_unloadable_model_or_bad_parameter_is_a_clear_fatal_error(
    env: dict[str, str], tmp_path: Path, case: str, expected: str
) -> None:
    if case == "gpu" and gpu_available():
        pytest.skip("CuPy sees a CUDA device here, so processing_device gpu starts")
    model = tmp_path / "model.onnx"
    if case == "corrupt":
        model.write_bytes(b"this is not an ONNX file")
    parameters = {
        "bad_alpha": ["-p", "overlay_alpha:=3.0"], "gpu": ["-p", "processing_device:=gpu"],
        "int8": ["-p", "precision:=int8", "-p", "backend:=tensorrt"],
    }.get(case, ["-p", f"model_path:={model}"])
    process = NodeProcess("segmentation_node", ["-r", f"__ns:=/seg_{case}", *parameters], env)
    assert process.wait(60) == 1
    output = process.output
    assert "cannot start" in output and expected in output
    assert len([line for line in output.splitlines() if "[FATAL]" in line]) == 1
    if case in ("missing", "corrupt"):
        assert str(model) in output
    assert "Traceback" not in output


def test_intra_op_threads_sizes_onnx_runtime_thread_pool(env: dict[str, str]) -> None:
    processes = {
        threads: NodeProcess(
            "segmentation_node", ["-r", f"__ns:=/seg_threads_{threads}", "-p", f"intra_op_threads:={threads}"], env
        )
        for threads in (1, 6)
    }
    try:
        for process in processes.values():
            process.wait_for_output("selfie_segmentation")
        # ONNX Runtime's intra-op pool runs n - 1 threads besides the calling one; the rest is the same.
        assert processes[6].thread_count() - processes[1].thread_count() == 5
    finally:
        assert all(process.stop() == 0 for process in processes.values())


def test_compressed_input_corrupt_frames_and_network_resolution(env: dict[str, str]) -> None:
    process = NodeProcess(
        "segmentation_node",
        ["-r", "__ns:=/seg_jpeg", "-r", "image/compressed:=/camera/jpeg", "-p", "use_compressed:=true",
         "-p", "output_resolution:=network"],
        env,
    )
    ros = RosClient("seg_jpeg_client")
    try:
        process.wait_for_output("selfie_segmentation")
        camera, labels = ros.camera_and_output(
            CompressedImage, "/camera/jpeg", Image, "/seg_jpeg/segmentation/labels"
        )
        jpeg = (IMAGES / "quokka.jpg").read_bytes()
        camera.publish(compressed_message(jpeg[: len(jpeg) // 2], "jpeg", "camera", (1, 0)))
        process.wait_for_output("truncated")
        camera.publish(compressed_message(b"not an image at all", "png", "camera", (2, 0)))
        process.wait_for_output("signature")
        received = send_and_receive(camera, labels, compressed_message(jpeg, "jpeg", "camera", (3, 0)))
        decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        spec = dataclasses.replace(load_model_spec("selfie_segmentation"), output_resolution="network")
        network_pipeline = Pipeline.from_spec(spec)
        expected = network_pipeline.run(decoded, "BGR").labels
        network_pipeline.close()
        assert (received.height, received.width) == (256, 256) == expected.shape
        np.testing.assert_array_equal(received_pixels(received, 1), expected)
    finally:
        ros.close()
        assert process.stop() == 0


def test_more_than_256_classes_give_mono16_labels_via_rclpy_messages(
    env: dict[str, str], tmp_path: Path
) -> None:
    # A model spec with 300 classes whose graph labels each pixel R + G + B; raw_intake off, so the
    # node builds rclpy messages instead of reading CDR bytes; processing_device auto (CPU here).
    graph = build_model(
        [helper.make_node("ReduceSum", ["image", "channel_axis"], ["sum"], keepdims=0),
         helper.make_node("Cast", ["sum"], ["labels"], to=TensorProto.INT32)],
        {"image": [1, 8, 8, 3]},
        {"labels": (TensorProto.INT32, [1, 8, 8])},
        [numpy_helper.from_array(np.array([3], np.int64), "channel_axis")],
    )
    onnx.save(graph, tmp_path / "sum.onnx")
    spec = {
        "name": "many_classes", "task": "segmentation", "model": "sum.onnx",
        "input": {"name": "image", "layout": "NHWC", "size": [8, 8], "normalization": {"type": "none"}},
        "labels": [f"class_{i}" for i in range(300)], "decoder": {"type": "labels"},
    }
    (tmp_path / "many.yaml").write_text(yaml.safe_dump(spec))
    process = NodeProcess(
        "segmentation_node",
        ["-r", "__ns:=/seg_many", "-r", "image:=/camera/small", "-p", f"model_spec:={tmp_path / 'many.yaml'}",
         "-p", "raw_intake:=false", "-p", "processing_device:=auto"],
        env,
    )
    ros = RosClient("seg_many_client")
    try:
        device = "gpu" if gpu_available() else "cpu"
        process.wait_for_output(f"many_classes (segmentation, backend onnxruntime, {device} pre/post-processing)")
        camera, labels = ros.camera_and_output(Image, "/camera/small", Image, "/seg_many/segmentation/labels")
        image = np.zeros((20, 30, 3), np.uint8)
        image[:, :15] = (200, 57, 0)  # class 257: needs 16 bits
        image[:, 15:] = (10, 20, 30)  # class 60
        received = send_and_receive(camera, labels, image_message(image, "rgb8", "small", (12, 34)))
        assert received.encoding == "mono16" and received.header.frame_id == "small"
        values = received_pixels(received, 1, np.uint16)
        assert values.shape == (20, 30)
        assert set(np.unique(values[:, :12]).tolist()) == {257}
        assert set(np.unique(values[:, 18:]).tolist()) == {60}
    finally:
        ros.close()
        assert process.stop() == 0
