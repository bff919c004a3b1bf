"""Images over DDS between processes: Fast DDS settings, and camera -> node -> labels end to end.

    source scripts/ros_env.sh && python bench/bench_transport_e2e.py [--part all|dds|e2e]

Writes docs/performance-transport.md (its own sections; the rest of the page is left alone) and
the measurement lines of config/dds/fastdds_large_images.xml. One run takes ~5 minutes.
``bench/run_bench.py`` (issue 7's one command) runs the e2e part with the shipped profile through
``measure_e2e`` and reports it in docs/performance.md.

Part ``dds``: one publisher process -> one subscriber process (both children of this script, both
raw: the publisher sends pre-serialized bytes, the subscriber takes serialized messages), rgb8
640x480 / 1280x720 / 1920x1080 at 30 Hz, best-effort and reliable, for Fast DDS settings given by
environment (FASTDDS_BUILTIN_TRANSPORTS, the shipped XML profile and variants of it written to a
temporary folder, glibc malloc tuning). Reports frames delivered and publish -> callback latency.

Part ``e2e``: this process is the camera (rgb8 frames published at 30 Hz (``--rate-hz``) as pre-serialized Image
bytes, or jpeg q90 CompressedImage) and the sink (raw subscription to the results, stamps matched),
with one node process between: the plain relay (bench/relay_node.py, the baseline hop: same bytes
out), the segmentation node (bundled selfie_segmentation spec, ONNX Runtime CPU) with
``raw_intake:=false`` (rclpy messages), with ``raw_intake:=true``, with ``raw_intake:=true`` as the node
was before inline processing (``inline_processing:=false opencv_threads:=0``: every frame handed to the
worker thread, OpenCV's own thread pool on), and with ``use_compressed:=true``.
All four processes run from the start, each in its own namespace with its own camera topics, and
take turns: per frame size 1 s of warm-up each, then ``ROUNDS`` windows each, one variant at a
time, so that a slower or faster spell of the shared machine is spread over all of them.
The camera publishes best-effort (sensor-data QoS), the node and relay subscribe with their default
(best-effort) and publish reliable. Latency = labels (or relayed image) received minus the frame's
stamp (same clock); throughput = results received per second against frames published per second
(a node that falls behind drops older frames rather than queueing them); the node's own stage
times come from its /diagnostics (the mean of its last 100 frames), read after each of its windows
and averaged over them, so the transport overhead (latency minus preprocess + inference +
postprocess) is visible next to the relay hop. Two runs: the shipped profile in every process, and Fast DDS's
defaults in every process (profile variables set empty, which the nodes respect). Malloc is tuned
in every process: the camera/sink here, the node and relay by ``run_node``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from importlib.metadata import version
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))

from bench.bench_common import RESOLUTIONS, parse_size, size_name  # noqa: E402
from bench.report import update_section  # noqa: E402
from node_harness import node_command as executable_command  # noqa: E402
from trt_perception.image_decoding import encode_image  # noqa: E402
from trt_perception.ros.cdr import MessageHeader, parse_image, serialize_image  # noqa: E402
from trt_perception.ros.image_conversion import tune_malloc_for_large_messages  # noqa: E402
from trt_perception.ros.perception_node import volatile_qos  # noqa: E402

DOC = ROOT / "docs" / "performance-transport.md"
PROFILE = ROOT / "config" / "dds" / "fastdds_large_images.xml"
PHOTO = ROOT / "test" / "fixtures" / "images" / "astronaut.png"
RELAY = ROOT / "bench" / "relay_node.py"
RELIABILITIES = ("best_effort", "reliable")
NODE_NAME = "bench_segmentation"
RELAY_NAME = "bench_relay"
STAGES = ("decode", "preprocess", "inference", "postprocess", "publish")
PIPELINE_STAGES = ("preprocess", "inference", "postprocess")
XML_MEASUREMENTS_BEGIN = "Measured by bench/bench_transport_e2e.py"
XML_MEASUREMENTS_END = "(end of measurements)"
RATE_HZ = 30.0
E2E_SECONDS = 2.5


def load_photo() -> np.ndarray:
    """The test photo (BGR)."""
    photo = cv2.imread(str(PHOTO))
    if photo is None:
        raise FileNotFoundError(PHOTO)
    return photo


def profile_env(path: Path) -> dict[str, str]:
    """Environment that makes Fast DDS 2.x and 3.x load ``path`` as the default profile."""
    return {"FASTRTPS_DEFAULT_PROFILES_FILE": str(path), "FASTDDS_DEFAULT_PROFILES_FILE": str(path)}


def profile_variant(folder: Path, name: str, segment_size: int | None, udp_buffer: int | None) -> Path:
    """The shipped profile with another SHM segment size (``None``: no SHM) or UDP socket buffers, as a file."""
    tree = ElementTree.parse(PROFILE)
    namespace = {"d": tree.getroot().tag.split("}")[0].strip("{")}
    ElementTree.register_namespace("", namespace["d"])  # Fast DDS wants an unprefixed <dds> root
    for descriptor in tree.getroot().iterfind(".//d:transport_descriptor", namespace):
        kind = descriptor.find("d:type", namespace).text  # type: ignore[union-attr]
        if kind == "SHM" and segment_size is not None:
            descriptor.find("d:segment_size", namespace).text = str(segment_size)  # type: ignore[union-attr]
        if kind == "UDPv4" and udp_buffer is not None:
            for tag in ("sendBufferSize", "receiveBufferSize"):
                ElementTree.SubElement(descriptor, f"{{{namespace['d']}}}{tag}").text = str(udp_buffer)
    if segment_size is None:
        transports = tree.getroot().find(".//d:userTransports", namespace)
        for transport_id in list(transports):  # type: ignore[arg-type]
            if transport_id.text == "shm_large_images":
                transports.remove(transport_id)  # type: ignore[union-attr]
    path = folder / f"{name}.xml"
    tree.write(path)
    return path


# ---- part dds: one publisher process -> one subscriber process ----------------------------------
@dataclass(frozen=True)
class DdsSetting:
    name: str
    env: dict[str, str]
    tune_malloc: bool = True
    depth: int = 5
    only_in: str | None = None  # "pub" | "sub": ``env`` applies to that process only


def dds_settings(folder: Path) -> list[DdsSetting]:
    mib = 1024 * 1024
    return [
        DdsSetting("Fast DDS defaults (SHM 512 KiB + UDPv4)", {}),
        DdsSetting("FASTDDS_BUILTIN_TRANSPORTS=SHM", {"FASTDDS_BUILTIN_TRANSPORTS": "SHM"}),
        DdsSetting("FASTDDS_BUILTIN_TRANSPORTS=UDPv4", {"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}),
        DdsSetting("FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA", {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}),
        DdsSetting("XML: UDPv4 only, 4 MiB socket buffers", profile_env(profile_variant(folder, "udp4m", None, 4 * mib))),
        DdsSetting("XML: SHM 4 MiB + UDPv4", profile_env(profile_variant(folder, "shm4", 4 * mib, None))),
        DdsSetting("XML: SHM 8 MiB + UDPv4", profile_env(profile_variant(folder, "shm8", 8 * mib, None))),
        DdsSetting("shipped profile (SHM 32 MiB + UDPv4)", profile_env(PROFILE)),
        DdsSetting("shipped profile in the publisher only", profile_env(PROFILE), only_in="pub"),
        DdsSetting("shipped profile in the subscriber only", profile_env(PROFILE), only_in="sub"),
        DdsSetting("shipped profile, QoS depth 1", profile_env(PROFILE), depth=1),
        DdsSetting("shipped profile, default malloc", profile_env(PROFILE), tune_malloc=False),
        DdsSetting("Fast DDS defaults, default malloc", {}, tune_malloc=False),
    ]


def probe_topics(reliabilities: Sequence[str] = RELIABILITIES) -> list[tuple[str, str, tuple[int, int]]]:
    """(topic, reliability, size) of every probe stream, smallest frames first."""
    return [(f"probe_{reliability}_{size_name(size)}", reliability, size) for reliability in reliabilities for size in RESOLUTIONS]


def probe_publisher(node: Node, seconds: float, depth: int, reliabilities: Sequence[str]) -> dict[str, int]:
    """Publish each probe topic's frames for ``seconds`` at 30 Hz in turn; frames sent per topic."""
    topics = probe_topics(reliabilities)
    publishers = {topic: node.create_publisher(Image, topic, volatile_qos(reliability, depth)) for topic, reliability, _ in topics}
    deadline = time.monotonic() + 20.0
    while any(p.get_subscription_count() == 0 for p in publishers.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    photo = cv2.cvtColor(load_photo(), cv2.COLOR_BGR2RGB)
    sent = {}
    for topic, _, size in topics:
        pixels = encode_image(np.ascontiguousarray(cv2.resize(photo, (size[1], size[0]))), "rgb8")

        def publish(frame_id: str) -> None:
            now = time.time_ns()
            publishers[topic].publish(serialize_image(MessageHeader(now // 10**9, now % 10**9, frame_id), pixels))

        for _ in range(3):
            publish("warm-up")
            time.sleep(1.0 / RATE_HZ)
        time.sleep(0.2)
        sent[topic] = publish_at_rate(lambda index: publish(str(index)), seconds)
        time.sleep(0.2)
    return sent


def percentile_90(values: list[float]) -> float:
    """Nearest-rank 90th percentile of sorted ``values``."""
    return values[math.ceil(0.9 * len(values)) - 1]


def publish_at_rate(publish: Callable[[int], object], seconds: float, rate_hz: float = RATE_HZ) -> int:
    """Call ``publish(index)`` at ``rate_hz`` for ``seconds``; the number of calls."""
    start, count = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        publish(count)
        count += 1
        time.sleep(max(0.0, start + count / rate_hz - time.monotonic()))
    return count


def probe_subscriber(node: Node, depth: int, reliabilities: Sequence[str], stop: threading.Event) -> dict[str, list[float]]:
    """Latencies (ms) of the frames received per probe topic until ``stop`` is set."""
    topics = probe_topics(reliabilities)
    latencies: dict[str, list[float]] = {topic: [] for topic, _, _ in topics}

    def receiver(topic: str) -> Callable[[bytes], None]:
        def on_frame(data: bytes) -> None:
            now = time.time_ns()
            header = parse_image(data).header
            if header.frame_id != "warm-up":
                latencies[topic].append((now - header.stamp_sec * 10**9 - header.stamp_nanosec) / 1e6)
        return on_frame

    for topic, reliability, _ in topics:
        node.create_subscription(Image, topic, receiver(topic), volatile_qos(reliability, depth), raw=True)
    while not stop.is_set():
        rclpy.spin_once(node, timeout_sec=0.1)
    return latencies


def run_probe_role(role: str, out: Path, seconds: float, depth: int, reliabilities: Sequence[str], tune_malloc: bool) -> None:
    """Body of a probe child process (``--probe-role``)."""
    if tune_malloc:
        tune_malloc_for_large_messages()
    stop = threading.Event()
    rclpy.init()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # after init: replaces rclpy's shutdown-on-SIGTERM
    node = rclpy.create_node(f"transport_probe_{role}")
    try:
        result: Any = (probe_publisher(node, seconds, depth, reliabilities) if role == "pub"
                       else probe_subscriber(node, depth, reliabilities, stop))
        out.write_text(json.dumps(result))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def measure_dds_setting(setting: DdsSetting, base_env: Mapping[str, str], folder: Path, seconds: float) -> dict[str, Any]:
    """Run the probe pair(s) for ``setting``; delivered frames and latency per (reliability, size).

    With glibc's default malloc each reliability gets fresh processes: its dynamic mmap threshold
    grows to the largest buffer freed so far, so frames after bigger ones would look cheaper than
    a camera of one size gets them.
    """
    env = {role: {**base_env, **(setting.env if setting.only_in in (None, role) else {})} for role in ("pub", "sub")}
    groups = [RELIABILITIES] if setting.tune_malloc else [(reliability,) for reliability in RELIABILITIES]
    sent: dict[str, int] = {}
    latencies: dict[str, list[float]] = {}
    for group in groups:
        command = [sys.executable, __file__, "--seconds", str(seconds), "--probe-depth", str(setting.depth),
                   "--probe-reliability", *group]
        if setting.tune_malloc:
            command.append("--probe-tune-malloc")
        sub_out, pub_out = folder / "sub.json", folder / "pub.json"
        subscriber = subprocess.Popen([*command, "--probe-role", "sub", "--probe-out", str(sub_out)], env=env["sub"])
        publisher = subprocess.run([*command, "--probe-role", "pub", "--probe-out", str(pub_out)], env=env["pub"], timeout=120, check=False)
        time.sleep(0.5)
        subscriber.send_signal(signal.SIGTERM)
        subscriber.wait(timeout=30)
        if publisher.returncode != 0 or subscriber.returncode != 0:
            raise RuntimeError(f"probe processes failed for {setting.name}")
        sent.update(json.loads(pub_out.read_text()))
        latencies.update(json.loads(sub_out.read_text()))
    rows = {}
    for topic, reliability, size in probe_topics():
        values = sorted(latencies[topic])
        rows[(reliability, size_name(size))] = {
            "sent": sent[topic], "received": len(values),
            "p50": statistics.median(values) if values else None,
            "p90": percentile_90(values) if values else None,
        }
    return {"setting": setting, "rows": rows}


def dds_table(results: list[dict[str, Any]]) -> str:
    sizes = [size_name(size) for size in RESOLUTIONS]
    lines = [
        "| setting | malloc | depth | " + " | ".join(f"{r} {s}" for r in ("best-effort", "reliable") for s in sizes) + " |",
        "|---|---|---|" + "---|" * (2 * len(sizes)),
    ]
    for result in results:
        setting = result["setting"]
        cells = []
        for reliability in RELIABILITIES:
            for size in sizes:
                row = result["rows"][(reliability, size)]
                latency = f"{row['p50']:.1f} ({row['p90']:.1f})" if row["p50"] is not None else "-"
                cells.append(f"{row['received']}/{row['sent']}, {latency}")
        malloc = "tuned" if setting.tune_malloc else "default"
        lines.append(f"| {setting.name} | {malloc} | {setting.depth} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def xml_measurements(results: list[dict[str, Any]]) -> str:
    """Plain-text lines for the XML profile's comment (no double hyphens: not allowed in XML comments)."""
    sizes = [size_name(size) for size in RESOLUTIONS]
    lines = [XML_MEASUREMENTS_BEGIN + " (" + time.strftime("%Y-%m-%d", time.gmtime()) + "): frames delivered of sent, latency p50 ms;",
             "best-effort (BE) and reliable (R), " + " / ".join(sizes) + ":"]
    for result in results:
        parts = []
        for reliability, short in zip(RELIABILITIES, ("BE", "R")):
            cells = []
            for size in sizes:
                row = result["rows"][(reliability, size)]
                cells.append(f"{row['received']}/{row['sent']} {row['p50']:.1f}" if row["p50"] is not None else f"0/{row['sent']}")
            parts.append(f"{short} " + ", ".join(cells))
        lines.append(f"  {result['setting'].name}: " + "; ".join(parts))
    lines.append(XML_MEASUREMENTS_END)
    return "\n".join(line.replace("--", "- -") for line in lines)


def update_xml_comment(text: str) -> None:
    content = PROFILE.read_text()
    placeholder = "MEASUREMENTS\n"
    if XML_MEASUREMENTS_BEGIN in content:
        head, rest = content.split(XML_MEASUREMENTS_BEGIN, 1)
        content = head + text + rest.split(XML_MEASUREMENTS_END, 1)[1]
    else:
        content = content.replace(placeholder, text + "\n", 1)
    PROFILE.write_text(content)


# ---- part e2e: camera -> node -> sink -----------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    name: str
    output_topic: str
    command: list[str]
    compressed: bool = False


def node_command(*parameters: str) -> list[str]:
    arguments = ["--ros-args", "-r", f"__node:={NODE_NAME}", "-p", "model_spec:=selfie_segmentation", "-p", "backend:=onnxruntime"]
    for parameter in parameters:
        arguments += ["-p", parameter]
    return [*executable_command("segmentation_node"), *arguments]


# Issue 14: end-to-end node latency <= this times (a plain relay hop + the model's own inference time).
NODE_LATENCY_GOAL = 1.2
# The variant issue 14's node goal is judged on: the node with its default settings (raw intake).
SHIPPED_NODE = "node, raw intake (raw_intake:=true)"

VARIANTS = [
    Variant("relay hop (baseline)", f"/{RELAY_NAME}/image", [sys.executable, str(RELAY), "--ros-args", "-r", f"__node:={RELAY_NAME}"]),
    Variant("node, rclpy intake (raw_intake:=false)", f"/{NODE_NAME}/labels", node_command("raw_intake:=false")),
    Variant(SHIPPED_NODE, f"/{NODE_NAME}/labels", node_command("raw_intake:=true")),
    Variant("node, raw intake, worker hand-off and OpenCV's thread pool (inline_processing:=false opencv_threads:=0)",
            f"/{NODE_NAME}/labels", node_command("raw_intake:=true", "inline_processing:=false", "opencv_threads:=0")),
    Variant("node, jpeg q90 input (use_compressed:=true)", f"/{NODE_NAME}/labels", node_command("use_compressed:=true"), compressed=True),
]


@dataclass
class Sink:
    """Receive times of one variant's results by input stamp, and its node's latest diagnostics values
    (the node's status is named ``<namespace>/<node name>: <task>``)."""

    namespace: str
    received: dict[int, float] = field(default_factory=dict)
    diagnostics: dict[str, str] = field(default_factory=dict)

    def on_result(self, data: bytes) -> None:
        now = time.time()
        header = parse_image(data).header
        self.received[header.stamp_sec * 10**9 + header.stamp_nanosec] = now

    def on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.startswith(f"{self.namespace}/{NODE_NAME}:"):
                self.diagnostics = {pair.key: pair.value for pair in status.values}


class Camera:
    """Publishes one photo at a given size, as pre-serialized rgb8 Image bytes or a jpeg CompressedImage."""

    def __init__(self, node: Node, namespace: str) -> None:
        self._photo = load_photo()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._raw = node.create_publisher(Image, f"{namespace}/image", qos)
        self._compressed = node.create_publisher(CompressedImage, f"{namespace}/image/compressed", qos)

    def frames(self, size: tuple[int, int], compressed: bool) -> Callable[[int], int]:
        """A function that publishes the next frame and returns its stamp (ns)."""
        bgr = cv2.resize(self._photo, (size[1], size[0]))
        if compressed:
            message = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
            message.header.frame_id = "camera"

            def publish_compressed(_: int) -> int:
                now = time.time_ns()
                message.header.stamp.sec, message.header.stamp.nanosec = now // 10**9, now % 10**9
                self._compressed.publish(message)
                return now
            return publish_compressed
        pixels = encode_image(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), "rgb8")

        def publish_raw(_: int) -> int:
            now = time.time_ns()
            self._raw.publish(serialize_image(MessageHeader(now // 10**9, now % 10**9, "camera"), pixels))
            return now
        return publish_raw

    def subscribed(self, compressed: bool) -> bool:
        return (self._compressed if compressed else self._raw).get_subscription_count() > 0


@contextmanager
def started(command: list[str], env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=dict(env))
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# Windows per variant and frame size: the variants take turns, so that a slower or faster spell of
# the shared machine falls on all of them rather than on one.
ROUNDS = 5
# Seconds after a window for its last results to arrive.
SETTLE_SECONDS = 0.3


def wait_until_up(node: Node, cameras: Sequence[Camera], sinks: Sequence[Sink], processes: Sequence[subprocess.Popen],
                  logs: Sequence[Path]) -> None:
    """Wait until every variant's process subscribes to its camera and publishes its results."""
    deadline = time.monotonic() + 90.0
    for variant, camera, sink, process, log in zip(VARIANTS, cameras, sinks, processes, logs):
        while not (camera.subscribed(variant.compressed) and node.count_publishers(sink.namespace + variant.output_topic) > 0):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{variant.name} did not come up; see {log}")
            time.sleep(0.1)


def measure_size(cameras: Sequence[Camera], sinks: Sequence[Sink], size: tuple[int, int], rate_hz: float,
                 seconds: float) -> list[dict[str, Any]]:
    """One row per variant at ``size``: 1 s of warm-up each, then ``ROUNDS`` windows of
    ``seconds / ROUNDS`` per variant, the variants in turn."""
    publishers = [camera.frames(size, variant.compressed) for camera, variant in zip(cameras, VARIANTS)]
    for publish in publishers:
        publish_at_rate(publish, 1.0, rate_hz)  # matching, first inference, buffers
    time.sleep(SETTLE_SECONDS)
    latencies: list[list[float]] = [[] for _ in VARIANTS]
    sent_counts = [0] * len(VARIANTS)
    elapsed = [0.0] * len(VARIANTS)
    stage_snapshots: list[list[dict[str, str]]] = [[] for _ in VARIANTS]
    for round_index in range(ROUNDS):
        for index, (publish, sink) in enumerate(zip(publishers, sinks)):
            if round_index > 0:  # the node idled since its last window: its diagnostics hold that window's frames
                stage_snapshots[index].append(dict(sink.diagnostics))
            sink.received.clear()
            sent: list[int] = []
            start = time.monotonic()
            publish_at_rate(lambda frame: sent.append(publish(frame)), seconds / ROUNDS, rate_hz)
            elapsed[index] += time.monotonic() - start
            time.sleep(SETTLE_SECONDS)
            latencies[index] += [(sink.received[stamp] - stamp / 1e9) * 1e3 for stamp in sent if stamp in sink.received]
            sent_counts[index] += len(sent)
    time.sleep(1.0)  # one more /diagnostics from every node
    rows = []
    for variant, sink, values, sent_count, seconds_sent, snapshots in zip(
        VARIANTS, sinks, latencies, sent_counts, elapsed, stage_snapshots
    ):
        values.sort()
        stages = window_stage_means([*snapshots, dict(sink.diagnostics)])
        rows.append({
            "variant": variant.name, "frame": size_name(size), "sent": sent_count, "received": len(values),
            "input_hz": sent_count / seconds_sent, "output_hz": len(values) / seconds_sent,
            "p50": statistics.median(values) if values else None,
            "p90": percentile_90(values) if values else None,
            "max": values[-1] if values else None,
            "stages": stages if variant.output_topic.endswith("labels") else None,
        })
        print(rows[-1], flush=True)
    return rows


def window_stage_means(snapshots: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Each stage's time averaged over the node's diagnostics taken after each of its windows (each the
    mean of its last 100 frames: that window's and the end of the one before), so that the stage
    times cover the frames whose latency is measured rather than the last window alone."""
    return {
        stage: statistics.fmean(float(snapshot.get(f"latency_{stage}_ms_mean", "nan")) for snapshot in snapshots)
        for stage in STAGES
    }


def run_e2e(sizes: Sequence[tuple[int, int]], rate_hz: float, seconds: float, out: Path) -> None:
    """Body of the ``--e2e-run`` child: every variant at every size, rows written to ``out`` (JSON).
    Every variant's process runs from the start in its own namespace (its own camera topics), idle
    while the others take their turns; all share this process's environment."""
    folder = out.parent
    env = dict(os.environ)
    rclpy.init()
    node = rclpy.create_node("bench_transport_e2e")
    namespaces = [f"/e2e{index}" for index in range(len(VARIANTS))]
    sinks = [Sink(namespace) for namespace in namespaces]
    cameras = [Camera(node, namespace) for namespace in namespaces]
    result_qos = volatile_qos("reliable", 5)
    for variant, sink in zip(VARIANTS, sinks):
        node.create_subscription(Image, sink.namespace + variant.output_topic, sink.on_result, result_qos, raw=True)

    def on_diagnostics(message: DiagnosticArray) -> None:
        for sink in sinks:
            sink.on_diagnostics(message)

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    logs = [folder / f"{(sink.namespace + variant.output_topic).strip('/').replace('/', '_')}.log"
            for variant, sink in zip(VARIANTS, sinks)]
    try:
        with ExitStack() as stack:
            processes = [
                stack.enter_context(started([*variant.command, "-r", f"__ns:={sink.namespace}"], env, log))
                for variant, sink, log in zip(VARIANTS, sinks, logs)
            ]
            wait_until_up(node, cameras, sinks, processes, logs)
            rows = [row for size in sizes for row in measure_size(cameras, sinks, size, rate_hz, seconds)]
        out.write_text(json.dumps(rows))
    finally:
        executor.shutdown()
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()


def private_ros_env(folder: Path) -> dict[str, str]:
    """This process's environment on a random private ROS domain (localhost only, ROS_HOME in
    ``folder``), without the caller's Fast DDS profile, transport or malloc settings."""
    env = {**os.environ, "ROS_DOMAIN_ID": str(random.randint(150, 230)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_HOME": str(folder / "ros_home")}
    for key in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS", "GLIBC_TUNABLES"):
        env.pop(key, None)
    return env


def shipped_profile_env(base_env: Mapping[str, str]) -> dict[str, str]:
    """``base_env`` with the shipped Fast DDS profile for every process started with it."""
    return {**base_env, **profile_env(PROFILE)}


def measure_e2e(env: Mapping[str, str], folder: Path, sizes: Sequence[tuple[int, int]] = RESOLUTIONS,
                rate_hz: float = RATE_HZ, seconds: float = E2E_SECONDS) -> list[dict[str, Any]]:
    """Camera -> relay / node -> sink, every variant at every size: frames published at ``rate_hz``,
    ``seconds`` measured per size after 1 s of warm-up; one row per (variant, size).

    The camera/sink runs as a child process (this script with ``--e2e-run``) with ``env``: Fast DDS
    reads its profile when a process creates its first participant, and the relay and node processes
    inherit the same environment. Their logs go to ``folder``.
    """
    out = folder / "e2e.json"
    command = [sys.executable, __file__, "--e2e-run", "--seconds", str(seconds), "--rate-hz", str(rate_hz),
               "--sizes", *(size_name(size) for size in sizes), "--probe-out", str(out)]
    timeout = len(VARIANTS) * (60.0 + len(sizes) * (seconds + 5.0)) + 60.0
    subprocess.run(command, env=dict(env), check=True, timeout=timeout)
    return json.loads(out.read_text())


def latency_goal_ratio(row: dict[str, Any], relay_p50: float) -> float:
    """Issue 14's node-latency ratio of a node row: its p50 over the relay hop's p50 plus the inference
    time the node reports (goal: ``NODE_LATENCY_GOAL``)."""
    return float(row["p50"]) / (relay_p50 + float(row["stages"]["inference"]))


def goal_cell(ratio: float) -> str:
    """The node-latency ratio and whether it meets ``NODE_LATENCY_GOAL``."""
    return f"{ratio:.2f} ({'met' if ratio <= NODE_LATENCY_GOAL else 'not met'})"


def e2e_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of ``measure_e2e`` rows, each node row against the relay hop of its frame size."""
    relay = {row["frame"]: row for row in rows if row["stages"] is None}
    lines = [
        "| path | frame | delivered | input / labels Hz | latency p50 ms (p90, max) | node: decode / pipeline (inference) / publish ms "
        "| p50 minus pipeline ms | p50 / relay p50 | (p50 minus pipeline) / relay p50 "
        f"| p50 / (relay p50 + inference): goal <= {NODE_LATENCY_GOAL} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        latency = f"{row['p50']:.1f} ({row['p90']:.1f}, {row['max']:.1f})" if row["p50"] is not None else "-"
        base = relay.get(row["frame"], {}).get("p50")
        node_cells = ["", "", "", "", ""]
        if row["stages"] is not None and row["p50"] is not None:
            stages = row["stages"]
            pipeline = sum(stages[stage] for stage in PIPELINE_STAGES)
            overhead = row["p50"] - pipeline
            node_cells = [
                f"{stages['decode']:.2f} / {pipeline:.1f} ({stages['inference']:.1f}) / {stages['publish']:.2f}",
                f"{overhead:.1f}",
                f"{row['p50'] / base:.2f}" if base else "-",
                f"{overhead / base:.2f}" if base else "-",
                goal_cell(latency_goal_ratio(row, base)) if base else "-",
            ]
        elif row["p50"] is not None:
            node_cells = ["(no work)", f"{row['p50']:.1f}", "1.00", "1.00", ""]
        lines.append(f"| {row['variant']} | {row['frame']} | {row['received']}/{row['sent']} | "
                     f"{row['input_hz']:.1f} / {row['output_hz']:.1f} | {latency} | "
                     + " | ".join(node_cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    """This machine and the versions that matter for the DDS numbers."""
    return (f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs shared with other work), Python "
            f"{platform.python_version()}, Fast DDS {version('ros-fastrtps')} (rclpy {version('ros-rclpy')}), "
            f"onnxruntime {version('onnxruntime')}; net.core.rmem_max = {Path('/proc/sys/net/core/rmem_max').read_text().strip()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "dds", "e2e"), default="all")
    parser.add_argument("--seconds", type=float, default=None, help=f"measured seconds per size (dds: 1, e2e: {E2E_SECONDS:g})")
    parser.add_argument("--rate-hz", type=float, default=RATE_HZ, help="e2e: camera frame rate")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=RESOLUTIONS, metavar="WxH", help="e2e: frame sizes")
    parser.add_argument("--no-defaults-run", action="store_true", help="e2e: only the run with the shipped profile")
    parser.add_argument("--probe-role", choices=("pub", "sub"), help=argparse.SUPPRESS)
    parser.add_argument("--e2e-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe-depth", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--probe-reliability", nargs="+", choices=RELIABILITIES, default=RELIABILITIES, help=argparse.SUPPRESS)
    parser.add_argument("--probe-tune-malloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_role:
        run_probe_role(args.probe_role, args.probe_out, args.seconds, args.probe_depth, args.probe_reliability, args.probe_tune_malloc)
        return 0
    tune_malloc_for_large_messages()  # this process is the instrument (camera and sink) in every run
    if args.e2e_run:
        run_e2e(args.sizes, args.rate_hz, args.seconds, args.probe_out)
        return 0

    folder = Path(tempfile.mkdtemp(prefix="bench_transport_e2e_"))
    base_env = private_ros_env(folder)
    started_at = time.time()
    command = "python bench/bench_transport_e2e.py" + "".join(f" {a}" for a in sys.argv[1:])
    update_section("transport-intro", (
        f"Last run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `source scripts/ros_env.sh && {command}` on "
        f"{machine()}. Every table below is written by that script; logs of the child processes go to a temporary folder."
    ), DOC)
    if args.part in ("all", "dds"):
        results = [measure_dds_setting(s, base_env, folder, args.seconds or 1.0) for s in dds_settings(folder)]
        text = dds_table(results)
        print(text, flush=True)
        update_section("transport-dds", text, DOC)
        update_xml_comment(xml_measurements(results))
    if args.part in ("all", "e2e"):
        runs = [("shipped profile in every process (camera/sink, node or relay)", shipped_profile_env(base_env))]
        if not args.no_defaults_run:
            # Empty variables: the nodes (ros/dds_profile.py) then keep Fast DDS's defaults too.
            runs.append(("Fast DDS defaults in every process", {**base_env, **{name: "" for name in profile_env(PROFILE)}}))
        sections = []
        for title, env in runs:
            rows = measure_e2e(env, folder, args.sizes, args.rate_hz, args.seconds or E2E_SECONDS)
            sections.append(f"**{title}**\n\n{e2e_table(rows)}")
        text = "\n\n".join(sections)
        print(text, flush=True)
        update_section("transport-e2e", text, DOC)
    print(f"done in {time.time() - started_at:.0f} s; child logs in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
