"""Demo camera and viewer for scripts/demo.sh.

Publishes real images (sensor_msgs/Image, rgb8) as a camera would, receives what the node makes of
them (segmentation: ~/labels; detection: ~/detections; both: ~/overlay, ~/label_info), and reports:
per image the share of pixels of each class (segmentation) or the detections with class, score and
box (detection), frames per second in and out, latency from publishing a frame to receiving its
result, and per image an overlay PNG (and a colour-coded label PNG for segmentation).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from trt_perception import visualize
from trt_perception.ros.image_conversion import image_from_msg, image_to_msg

Stamp = tuple[int, int]


@dataclass
class Outputs:
    """What came back from the node, keyed by the header stamp of the camera frame."""

    results: dict[Stamp, Image | Detection2DArray] = field(default_factory=dict)
    overlays: dict[Stamp, Image] = field(default_factory=dict)
    received_at: dict[Stamp, float] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)


def stamp_of(header: Header) -> Stamp:
    return header.stamp.sec, header.stamp.nanosec


def load_camera_frames(paths: list[Path]) -> list[tuple[str, Image]]:
    """Read the images and wrap each in an rgb8 Image message."""
    frames = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"demo: cannot read image {path}")
        frames.append((path.stem, image_to_msg(bgr[:, :, ::-1], "rgb8", Header(frame_id="demo_camera"))))
    return frames


def publish_frames(
    node: Node, camera: Publisher, frames: list[tuple[str, Image]], rate: float, stop: Callable[[], bool]
) -> dict[Stamp, tuple[str, float]]:
    """Publish the frames in a loop at `rate` Hz, stamped now, until `stop()`; spin in between.

    Returns the name and send time of every frame published, by stamp."""
    sent: dict[Stamp, tuple[str, float]] = {}
    start = time.monotonic()
    for index, (name, message) in zip(itertools.count(), itertools.cycle(frames)):
        if stop():
            break
        message.header.stamp = node.get_clock().now().to_msg()
        sent[stamp_of(message.header)] = (name, time.monotonic())
        camera.publish(message)
        next_frame_at = start + (index + 1) / rate
        while (remaining := next_frame_at - time.monotonic()) > 0:
            rclpy.spin_once(node, timeout_sec=remaining)
    return sent


def run(args: argparse.Namespace) -> int:
    frames = load_camera_frames(args.images)
    rclpy.init()
    node = Node("demo_camera")
    outputs = Outputs()

    def on_result(message: Image | Detection2DArray) -> None:
        outputs.results[stamp_of(message.header)] = message
        outputs.received_at[stamp_of(message.header)] = time.monotonic()

    def on_overlay(message: Image) -> None:
        outputs.overlays[stamp_of(message.header)] = message

    def on_label_info(message: LabelInfo) -> None:
        outputs.class_names = [c.class_name for c in sorted(message.class_map, key=lambda c: c.class_id)]

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    result_type, result_topic = (Detection2DArray, "detections") if args.task == "detection" else (Image, "labels")
    node.create_subscription(result_type, f"{args.node}/{result_topic}", on_result, reliable)
    node.create_subscription(Image, f"{args.node}/overlay", on_overlay, reliable)
    node.create_subscription(LabelInfo, f"{args.node}/label_info", on_label_info, latched)
    camera = node.create_publisher(Image, args.topic, reliable)

    print(f"demo: waiting for the node to subscribe to {args.topic} ...", flush=True)
    deadline = time.monotonic() + args.startup_timeout
    while camera.get_subscription_count() == 0 or node.count_publishers(f"{args.node}/{result_topic}") == 0:
        if time.monotonic() > deadline:
            print("demo: the node did not come up", file=sys.stderr)
            return 1
        rclpy.spin_once(node, timeout_sec=0.1)

    print(f"demo: warming up (until the first {result_topic} arrive) ...", flush=True)
    warm_up_until = time.monotonic() + args.startup_timeout
    publish_frames(node, camera, frames[:1], args.rate, lambda: bool(outputs.results) or time.monotonic() > warm_up_until)
    if not outputs.results:
        print(f"demo: no {result_topic} from the node", file=sys.stderr)
        return 1
    outputs.results.clear()
    outputs.overlays.clear()
    outputs.received_at.clear()

    print(f"demo: publishing {len(frames)} images in a loop at {args.rate} Hz for {args.duration} s", flush=True)
    end = time.monotonic() + args.duration
    sent = publish_frames(node, camera, frames, args.rate, lambda: time.monotonic() >= end)
    drain_until = time.monotonic() + args.drain
    while time.monotonic() < drain_until:
        rclpy.spin_once(node, timeout_sec=0.05)

    report(args, sent, outputs)
    node.destroy_node()
    rclpy.shutdown()
    return 0 if outputs.results else 1


def describe_labels(message: Image, class_names: list[str], output: Path, name: str) -> str:
    """The share of pixels of each class; writes the colour-coded labels as ``<name>_labels.png``."""
    labels = np.asarray(image_from_msg(message).pixels)[:, :, 0]
    classes, counts = np.unique(labels, return_counts=True)
    shares = ", ".join(
        f"{class_names[c] if c < len(class_names) else c} {100.0 * n / labels.size:.1f}%"
        for c, n in zip(classes.tolist(), counts.tolist())
    )
    palette = visualize.make_palette(None, max(2, len(class_names)))
    cv2.imwrite(str(output / f"{name}_labels.png"), visualize.colorize(labels, palette)[:, :, ::-1])
    return f"labels {message.width}x{message.height} {message.encoding}: {shares}"


def describe_detections(message: Detection2DArray, class_names: list[str]) -> str:
    """Each detection as ``class score [x1, y1, x2, y2]`` (class_id is the index into ``~/label_info``)."""
    items = []
    for detection in message.detections:
        hypothesis = detection.results[0].hypothesis
        index = int(hypothesis.class_id) if hypothesis.class_id.isdigit() else -1
        label = class_names[index] if 0 <= index < len(class_names) else hypothesis.class_id
        box = detection.bbox
        x1, y1 = box.center.position.x - box.size_x / 2, box.center.position.y - box.size_y / 2
        items.append(f"{label} {hypothesis.score:.2f} [{x1:.0f}, {y1:.0f}, {x1 + box.size_x:.0f}, {y1 + box.size_y:.0f}]")
    return f"{len(items)} detections: " + ("; ".join(items) if items else "none")


def report(args: argparse.Namespace, sent: dict[Stamp, tuple[str, float]], outputs: Outputs) -> None:
    """Print what came out; write the newest overlay (and colour-coded labels) of each image as PNG."""
    args.output.mkdir(parents=True, exist_ok=True)
    reported: set[str] = set()
    for stamp in sorted(outputs.results, reverse=True):
        name = sent[stamp][0] if stamp in sent else None
        if name is None or name in reported:
            continue
        reported.add(name)
        message = outputs.results[stamp]
        if isinstance(message, Detection2DArray):
            print(f"demo: {name}: {describe_detections(message, outputs.class_names)}")
        else:
            print(f"demo: {name}: {describe_labels(message, outputs.class_names, args.output, name)}")
        overlay_msg = outputs.overlays.get(stamp)
        if overlay_msg is not None:
            overlay_path = args.output / f"{name}_overlay.png"
            cv2.imwrite(str(overlay_path), np.asarray(image_from_msg(overlay_msg).pixels)[:, :, ::-1])
            print(f"demo: {name}: wrote {overlay_path}")
    received_times = sorted(t for stamp, t in outputs.received_at.items() if stamp in sent)
    count = len(received_times)
    fps = (count - 1) / (received_times[-1] - received_times[0]) if count > 1 else 0.0
    print(f"demo: published {len(sent)} frames at {args.rate} Hz; received {count} results ({fps:.1f} fps)")
    latencies_ms = np.array(
        [1000.0 * (outputs.received_at[stamp] - sent[stamp][1]) for stamp in outputs.received_at if stamp in sent]
    )
    if latencies_ms.size:
        print(
            f"demo: publish -> result latency: median {np.median(latencies_ms):.1f} ms, "
            f"p90 {np.percentile(latencies_ms, 90):.1f} ms, max {latencies_ms.max():.1f} ms"
        )
    missing = sorted({name for name, _ in sent.values()} - reported)
    if missing:
        print(f"demo: no result received for: {', '.join(missing)}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("images", nargs="+", type=Path, help="images to publish, in a loop")
    parser.add_argument("--topic", default="/camera/image_raw", help="camera topic (remapped to the node's `image`)")
    parser.add_argument("--task", choices=("segmentation", "detection"), default="segmentation", help="the node's task")
    parser.add_argument("--node", default="/segmentation", help="the node (outputs are <node>/...)")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to publish")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds to wait for the last outputs")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for the node")
    parser.add_argument("--output", type=Path, default=Path("demo_output"), help="folder for the PNGs")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run(parse_args(sys.argv[1:])))
