"""Per-frame cost of image intake and output: rclpy message objects vs the raw CDR path.

    source scripts/ros_env.sh && python bench/bench_image_transport.py [--repeats N]

For 640x480, 1280x720 and 1920x1080 rgb8 frames (a real photo resized) it times, side by side:

intake (serialized bytes, as a subscription receives them -> HxWxC pixel view)
  - rclpy:  ``deserialize_message(bytes, Image)`` + ``image_from_msg``
  - raw:    ``cdr.parse_image(bytes).decode()``
  - jpeg:   ``cdr.parse_compressed_image(bytes).decode()`` for the same frame as a q90 jpeg
building an rgb8 Image object (no serialization)
  - naive:  ``msg.data = pixels.tobytes()`` on a default Image (tobytes copy + array.array copy)
  - ``image_conversion.image_to_msg`` (one copy into an array.array, kept by check_fields=True)
output (HxW uint8 labels and HxWx3 rgb8 colour mask -> serialized bytes, as publish needs them)
  - rclpy naive:   the naive Image + ``serialize_message``
  - rclpy:         ``image_conversion.image_to_msg`` + ``serialize_message``
  - raw:           ``cdr.serialize_image(header, encode_image(...))``

Reports the median and the 10th percentile in milliseconds per frame (the machine may be shared;
the low percentile is the cost without interference).
"""

from __future__ import annotations

import argparse
import array
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trt_perception.image_decoding import encode_image  # noqa: E402
from trt_perception.ros.cdr import (  # noqa: E402
    parse_compressed_image,
    parse_image,
    serialize_image,
)
from trt_perception.ros.image_conversion import (  # noqa: E402
    image_from_msg,
    image_to_msg,
    message_header,
    tune_malloc_for_large_messages,
)

RESOLUTIONS = ((640, 480), (1280, 720), (1920, 1080))
PHOTO = ROOT / "test" / "fixtures" / "images" / "astronaut.png"


def _time_ms(action: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, 10th percentile) of ``repeats`` timed calls, in milliseconds, after a warm-up."""
    for _ in range(3):
        action()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        action()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    samples.sort()
    return statistics.median(samples), samples[len(samples) // 10]


def _header() -> Header:
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec = 1_732_000_000
    header.stamp.nanosec = 123_456_789
    return header


def _naive_msg(pixels: np.ndarray, encoding: str, header: Header) -> Image:
    """The usual way: default Image, ``msg.data = pixels.tobytes()`` (copied twice)."""
    msg = Image(header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding)
    msg.step = pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1)
    msg.data = pixels.tobytes()
    return msg


def _cases(width: int, height: int) -> tuple[list[tuple[str, str, Callable[[], object]]], int]:
    """(stage, method, action) per timed case, and the size of the serialized jpeg frame."""
    original = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)
    if original is None:
        raise FileNotFoundError(f"cannot read {PHOTO}")
    photo = cv2.resize(original, (width, height))
    rgb = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)
    labels = (cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY) // 13).astype(np.uint8)
    header = _header()
    raw_header = message_header(header)
    image_bytes = serialize_message(image_to_msg(rgb, "rgb8", header))
    ok, jpeg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    compressed = CompressedImage(header=header, format="bgr8; jpeg compressed bgr8")
    compressed.data = array.array("B", jpeg.tobytes())
    jpeg_bytes = serialize_message(compressed)

    def rclpy_intake() -> object:
        return image_from_msg(deserialize_message(image_bytes, Image)).pixels

    def raw_intake() -> object:
        return parse_image(image_bytes).decode().pixels

    def jpeg_intake() -> object:
        return parse_compressed_image(jpeg_bytes).decode().pixels

    cases: list[tuple[str, str, Callable[[], object]]] = [
        ("intake rgb8", "rclpy deserialize + image_from_msg", rclpy_intake),
        ("intake rgb8", "raw parse_image + decode", raw_intake),
        ("intake jpeg q90", "raw parse + cv2 decode", jpeg_intake),
        ("build Image rgb8", "naive msg.data = tobytes()", lambda: _naive_msg(rgb, "rgb8", header)),
        ("build Image rgb8", "image_to_msg", lambda: image_to_msg(rgb, "rgb8", header)),
    ]
    def rclpy_naive_output(pixels: np.ndarray, encoding: str) -> object:
        return serialize_message(_naive_msg(pixels, encoding, header))

    def rclpy_output(pixels: np.ndarray, encoding: str) -> object:
        return serialize_message(image_to_msg(pixels, encoding, header))

    def raw_output(pixels: np.ndarray, encoding: str) -> object:
        return serialize_image(raw_header, encode_image(pixels, encoding))

    for name, pixels, encoding in (("labels mono8", labels, "mono8"), ("mask rgb8", rgb, "rgb8")):
        for method, output in (
            ("rclpy naive msg + serialize_message", rclpy_naive_output),
            ("rclpy image_to_msg + serialize_message", rclpy_output),
            ("raw serialize_image", raw_output),
        ):
            cases.append((f"output {name}", method, partial(output, pixels, encoding)))
    return cases, len(jpeg_bytes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per case")
    parser.add_argument(
        "--tune-malloc",
        action="store_true",
        help="call image_conversion.tune_malloc_for_large_messages() first (as a node can)",
    )
    args = parser.parse_args()
    malloc = "glibc defaults"
    if args.tune_malloc:
        malloc = "tuned" if tune_malloc_for_large_messages() else "tuning unavailable"

    print(f"# image transport, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}, malloc: {malloc}"
    )
    print(f"# ms per frame, median (p10) over {args.repeats} calls")
    print()
    columns = [f"{w}x{h}" for w, h in RESOLUTIONS]
    print("| stage | method | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    results: dict[tuple[str, str], list[str]] = {}
    jpeg_sizes = []
    for width, height in RESOLUTIONS:
        cases, jpeg_size = _cases(width, height)
        jpeg_sizes.append(f"{jpeg_size / 1024:.0f} KiB")
        for stage, method, action in cases:
            median, low = _time_ms(action, args.repeats)
            results.setdefault((stage, method), []).append(f"{median:.3f} ({low:.3f})")
    for (stage, method), cells in results.items():
        print(f"| {stage} | {method} | " + " | ".join(cells) + " |")
    print("| (jpeg q90 message size) | | " + " | ".join(jpeg_sizes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
