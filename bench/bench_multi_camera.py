"""Several cameras: one segmentation node for N cameras against N separate nodes, over DDS.

    source scripts/ros_env.sh && python bench/bench_multi_camera.py [--cameras 1 2 4] [--seconds 5]

This process is every camera and the sink: N cameras publish rgb8 frames (``--size``, default
640x480) at ``--rate-hz`` each (pre-serialized, best effort, the shipped Fast DDS profile in every
process), stamped with the send time; results are received raw and matched by camera and stamp.
Same model in every setup: the bundled selfie segmentation with its batch dimension made dynamic
(test/batch_models.py), ONNX Runtime CPU. Setups, for each N:

- ``one node, batched``: ``segmentation_node`` with ``cameras:=[cam0, ...]``: the newest frame of
  each camera runs as one batch;
- ``one node, in turn``: the same with the batch-1 original model: one network, cameras one after
  another;
- ``N nodes``: N ``segmentation_node`` processes, one per camera, each with its own copy of the
  network.

Reported per setup: frames delivered, results per second (throughput), latency send -> labels
received (p50, p90), the worst camera's share of its frames (fairness), CPU seconds of the node
processes per result and their resident memory. Writes bench/results/vm-cpu/multi_camera.json and
the section ``multi-camera`` of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))

from batch_models import SELFIE_MODEL, batched_selfie_model  # noqa: E402
from bench.bench_transport_e2e import machine, percentile_90, private_ros_env, shipped_profile_env, started  # noqa: E402
from bench.report import update_section  # noqa: E402
from bench.bench_common import parse_size, size_name  # noqa: E402
from node_harness import camera_frame, node_command as executable_command  # noqa: E402
from trt_perception.image_decoding import encode_image  # noqa: E402
from trt_perception.ros.cdr import MessageHeader, parse_image, serialize_image  # noqa: E402
from trt_perception.ros.perception_node import volatile_qos  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "vm-cpu" / "multi_camera.json"
CAMERA_IMAGES = ("astronaut.png", "coffee.png", "motorcycle_left.png", "astronaut.png")
WARM_UP_SECONDS = 2.0


@dataclass(frozen=True)
class Setup:
    name: str
    one_node: bool
    batched_model: bool


SETUPS = (
    Setup("one node, batched", one_node=True, batched_model=True),
    Setup("one node, in turn (batch-1 model)", one_node=True, batched_model=False),
    Setup("N nodes", one_node=False, batched_model=True),
)


def node_command(name: str, model: Path, parameters: Sequence[str], remaps: Sequence[str]) -> list[str]:
    arguments = ["--ros-args", "-r", f"__node:={name}", "-p", f"model_path:={model}", "-p", "backend:=onnxruntime"]
    for parameter in parameters:
        arguments += ["-p", parameter]
    for remap in remaps:
        arguments += ["-r", remap]
    return [*executable_command("segmentation_node"), *arguments]


def node_commands(setup: Setup, cameras: int, model: Path) -> list[tuple[list[str], list[str]]]:
    """(command, output topics by camera) of each node process of ``setup``."""
    if setup.one_node:
        names = ", ".join(f"cam{index}" for index in range(cameras))
        command = node_command("bench_multi", model, [f"cameras:=[{names}]"], [])
        return [(command, [f"/bench_multi/cam{index}/labels" for index in range(cameras)])]
    return [
        (node_command(f"bench_single{index}", model, [], [f"image:=/cam{index}/image"]), [f"/bench_single{index}/labels"])
        for index in range(cameras)
    ]


class Cameras:
    """N cameras publishing pre-serialized frames in turn at a rate each; receive times by (camera, stamp)."""

    def __init__(self, node: Node, count: int, size: tuple[int, int]) -> None:
        best_effort = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.publishers = [node.create_publisher(Image, f"/cam{index}/image", best_effort) for index in range(count)]
        self.pixels = [encode_image(camera_frame(CAMERA_IMAGES[index], *size), "rgb8") for index in range(count)]
        self.received: list[dict[int, float]] = [{} for _ in range(count)]
        self._subscriptions: list[Any] = []
        self._node = node

    def listen(self, topics: Sequence[str]) -> None:
        """Record results of camera ``i`` from ``topics[i]``."""
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions = [
            self._node.create_subscription(Image, topic, self._recorder(index), volatile_qos("reliable", 50), raw=True)
            for index, topic in enumerate(topics)
        ]

    def _recorder(self, index: int) -> Any:
        def record(data: bytes) -> None:
            header = parse_image(data).header
            self.received[index][header.stamp_sec * 10**9 + header.stamp_nanosec] = time.time()
        return record

    def connected(self) -> bool:
        return all(publisher.get_subscription_count() > 0 for publisher in self.publishers) and all(
            subscription.get_publisher_count() > 0 for subscription in self._subscriptions
        )

    def run(self, seconds: float, rate_hz: float) -> list[list[int]]:
        """Publish every camera at ``rate_hz`` for ``seconds``; the stamps sent per camera."""
        sent: list[list[int]] = [[] for _ in self.publishers]
        start, tick = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            for index, (publisher, pixels) in enumerate(zip(self.publishers, self.pixels)):
                now = time.time_ns()
                publisher.publish(serialize_image(MessageHeader(now // 10**9, now % 10**9, f"cam{index}"), pixels))
                sent[index].append(now)
            tick += 1
            time.sleep(max(0.0, start + tick / rate_hz - time.monotonic()))
        return sent


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(setup: Setup, count: int, args: argparse.Namespace, node: Node, models: dict[bool, Path],
            env: dict[str, str], folder: Path) -> dict[str, Any]:
    cameras = Cameras(node, count, args.size)
    commands = node_commands(setup, count, models[setup.batched_model])
    cameras.listen([topic for _, topics in commands for topic in topics])
    with ExitStack() as stack:
        processes = [
            stack.enter_context(started(command, env, folder / f"node_{count}_{index}.log"))
            for index, (command, _) in enumerate(commands)
        ]
        deadline = time.monotonic() + 90.0
        while not cameras.connected():
            if time.monotonic() > deadline or any(process.poll() is not None for process in processes):
                raise RuntimeError(f"{setup.name} x{count} did not come up; logs in {folder}")
            time.sleep(0.1)
        time.sleep(1.0)  # the nodes see the sink's subscriptions (lazy)
        cameras.run(WARM_UP_SECONDS, args.rate_hz)
        time.sleep(0.5)
        for received in cameras.received:
            received.clear()
        cpu_before = sum(cpu_seconds(process.pid) for process in processes)
        start = time.monotonic()
        sent = cameras.run(args.seconds, args.rate_hz)
        elapsed = time.monotonic() - start
        time.sleep(1.0)  # the last results
        cpu = sum(cpu_seconds(process.pid) for process in processes) - cpu_before
        memory = sum(resident_mb(process.pid) for process in processes)
    for publisher in cameras.publishers:
        node.destroy_publisher(publisher)
    cameras.listen([])
    latencies = sorted(
        (received[stamp] - stamp / 1e9) * 1e3
        for stamps, received in zip(sent, cameras.received) for stamp in stamps if stamp in received
    )
    shares = [sum(stamp in received for stamp in stamps) / len(stamps) for stamps, received in zip(sent, cameras.received)]
    row = {
        "setup": setup.name, "cameras": count, "sent": sum(map(len, sent)), "received": len(latencies),
        "input_hz": sum(map(len, sent)) / elapsed, "results_hz": len(latencies) / elapsed,
        "p50": statistics.median(latencies) if latencies else None,
        "p90": percentile_90(latencies) if latencies else None,
        "worst_camera_share": min(shares), "cpu_ms_per_result": cpu / len(latencies) * 1e3 if latencies else None,
        "node_rss_mb": memory, "processes": len(commands),
    }
    print(row, flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| cameras | setup | node processes | delivered | input / results Hz | latency p50 ms (p90) "
        "| worst camera's share | node CPU ms per result | node RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        latency = f"{row['p50']:.1f} ({row['p90']:.1f})" if row["p50"] is not None else "-"
        cpu = f"{row['cpu_ms_per_result']:.1f}" if row["cpu_ms_per_result"] is not None else "-"
        lines.append(
            f"| {row['cameras']} | {row['setup']} | {row['processes']} | {row['received']}/{row['sent']} | "
            f"{row['input_hz']:.0f} / {row['results_hz']:.0f} | {latency} | {row['worst_camera_share']:.2f} | {cpu} | "
            f"{row['node_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    env = shipped_profile_env(private_ros_env(folder))
    os.environ.update(env)  # this process's participant too: before rclpy.init
    models = {True: batched_selfie_model(folder / "selfie_dynamic_batch.onnx"), False: SELFIE_MODEL}
    rclpy.init()
    node = rclpy.create_node("bench_multi_camera")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        return [
            measure(setup, count, args, node, models, env, folder)
            for count in args.cameras for setup in SETUPS if count > 1 or setup.batched_model
        ]
    finally:
        executor.shutdown()
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--size", type=parse_size, default=(480, 640), help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--rate-hz", type=float, default=30.0, help="frames per second of each camera")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per setup")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_multi_camera_") as temporary:
        rows = run(args, Path(temporary))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine(), "args": {**vars(args), "size": size_name(args.size)},
                                   "rows": rows}, indent=1))
    command = "python bench/bench_multi_camera.py " + " ".join(sys.argv[1:])
    update_section("multi-camera", f"Measured by `{command.strip()}` on {machine()}; "
                   f"{size_name(args.size)} rgb8 at {args.rate_hz:g} Hz per camera, {args.seconds:g} s per setup.\n\n"
                   + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
