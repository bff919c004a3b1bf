"""End-to-end latency of the segmentation node over DDS: image published -> labels received.

    source scripts/ros_env.sh && python bench/bench_node_latency.py [--seconds 6] [--update-doc]

Starts ``segmentation_node`` (bundled selfie_segmentation spec, ONNX Runtime on the CPU) as its
own process in a private ROS domain, publishes bgr8 frames of 640x480, 1280x720 and 1920x1080 at
30 Hz (messages built once, only the stamp changes) and subscribes to ``~/labels``. Latency is the
receive time minus the header stamp (same clock), matched by stamp; throughput is labels received
per second while publishing at 30 Hz (the node drops older frames when it falls behind). Both
sides use reliable QoS: with Fast DDS defaults best-effort frames above ~512 KB are lost between
processes (see notes/requests-transport.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import update_section  # noqa: E402

RESOLUTIONS = [(480, 640), (720, 1280), (1080, 1920)]
RATE_HZ = 30.0
NODE_NAME = "bench_segmentation"


def start_node(env: dict[str, str]) -> subprocess.Popen:
    installed = Path(sys.prefix) / "lib" / "trt_perception" / "segmentation_node"
    command = [sys.executable, str(installed)] if installed.is_file() else [sys.executable, "-m", "trt_perception.ros.segmentation_node"]
    log = open(Path(tempfile.gettempdir()) / "bench_node_latency_node.log", "wb")  # noqa: SIM115 (lives with the process)
    return subprocess.Popen(
        [*command, "--ros-args", "-r", f"__node:={NODE_NAME}", "-p", "model_spec:=selfie_segmentation",
         "-p", "input_reliability:=reliable", "-p", "output_reliability:=reliable"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )


def frame_message(size: tuple[int, int]) -> Image:
    image = cv2.resize(cv2.imread(str(ROOT / "test" / "fixtures" / "images" / "astronaut.png")), (size[1], size[0]))
    message = Image()
    message.height, message.width, message.encoding = size[0], size[1], "bgr8"
    message.step = size[1] * 3
    message.header.frame_id = "camera"
    message.data = image.tobytes()
    return message


def measure(node, publisher, received: dict[int, float], size: tuple[int, int], seconds: float) -> dict:
    message = frame_message(size)
    sent: dict[int, float] = {}

    def publish_for(duration: float, record: bool) -> None:
        period, start = 1.0 / RATE_HZ, time.monotonic()
        count = 0
        while time.monotonic() - start < duration:
            now = node.get_clock().now()
            message.header.stamp = now.to_msg()
            if record:
                sent[now.nanoseconds] = time.time()
            publisher.publish(message)
            count += 1
            time.sleep(max(0.0, start + count * period - time.monotonic()))

    publish_for(2.0, record=False)  # warm-up: discovery, first inference, buffers
    time.sleep(0.5)
    received.clear()
    start = time.monotonic()
    publish_for(seconds, record=True)
    elapsed = time.monotonic() - start
    time.sleep(1.0)  # let the last results arrive
    latencies = [(received[stamp] - sent[stamp]) * 1e3 for stamp in sent if stamp in received]
    if not latencies:
        return {"frame": f"{size[1]}x{size[0]}", "sent": len(sent), "received": 0}
    latencies.sort()
    return {
        "frame": f"{size[1]}x{size[0]}",
        "sent": len(sent),
        "received": len(latencies),
        "input_hz": len(sent) / elapsed,
        "output_hz": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p90_ms": latencies[int(0.9 * (len(latencies) - 1))],
        "max_ms": latencies[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--update-doc", action="store_true")
    args = parser.parse_args()
    os.environ.update({"ROS_DOMAIN_ID": str(random.randint(150, 230)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})
    process = start_node(dict(os.environ))
    rclpy.init()
    node = rclpy.create_node("bench_node_latency")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
    received: dict[int, float] = {}

    def on_labels(message: Image) -> None:
        received[message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec] = time.time()

    publisher = node.create_publisher(Image, "image", qos)
    node.create_subscription(Image, f"{NODE_NAME}/labels", on_labels, qos)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    rows = []
    try:
        deadline = time.monotonic() + 60
        while publisher.get_subscription_count() == 0 or node.count_publishers(f"{NODE_NAME}/labels") == 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("segmentation_node did not come up; see " + str(Path(tempfile.gettempdir()) / "bench_node_latency_node.log"))
            time.sleep(0.1)
        for size in RESOLUTIONS:
            rows.append(measure(node, publisher, received, size, args.seconds))
            print(rows[-1], flush=True)
    finally:
        process.terminate()
        process.wait(timeout=20)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} ({os.cpu_count()} CPUs, "
        f"shared with other work), `python bench/bench_node_latency.py --seconds {args.seconds:g}`: segmentation_node "
        "with selfie_segmentation on ONNX Runtime (CPU), bgr8 input published at 30 Hz, reliable QoS both ways.",
        "",
        "| frame | sent | received | input Hz | labels Hz | latency p50 ms | p90 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["received"]:
            lines.append(f"| {row['frame']} | {row['sent']} | {row['received']} | {row['input_hz']:.1f} | {row['output_hz']:.1f} | "
                         f"{row['p50_ms']:.1f} | {row['p90_ms']:.1f} | {row['max_ms']:.1f} |")
        else:
            lines.append(f"| {row['frame']} | {row['sent']} | 0 | | | | | |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.update_doc:
        update_section("node_latency", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
