"""A camera in its own process for the node tests: publishes rgb8 frames best effort.

    python camera_process.py TOPIC IMAGE_NAME HEIGHTxWIDTH[,HEIGHTxWIDTH...] FRAMES RATE_HZ FIRST_SEC

Waits until the topic has a subscriber, then for each size publishes FRAMES frames of
``node_harness.camera_frame(IMAGE_NAME, height, width)`` at RATE_HZ with stamp
(FIRST_SEC + size index, frame index), pausing a second between sizes, and exits 0 (1 when no
subscriber shows up within 30 s). Its Fast DDS settings come from the environment it is started with
(a separate process, because Fast DDS reads the profile variables once per process).
"""

from __future__ import annotations

import sys
import time

import rclpy
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from node_harness import camera_frame, image_message, qos

SUBSCRIBER_TIMEOUT_S = 30.0


def main(topic: str, image_name: str, sizes_text: str, frames: int, rate_hz: float, first_sec: int) -> int:
    sizes = [tuple(int(v) for v in size.split("x")) for size in sizes_text.split(",")]
    rclpy.init()
    node = rclpy.create_node("test_camera")
    try:
        best_effort: QoSProfile = qos(reliable=False, depth=5)
        publisher = node.create_publisher(Image, topic, best_effort)
        deadline = time.monotonic() + SUBSCRIBER_TIMEOUT_S
        while publisher.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.05)
        time.sleep(0.5)  # the subscriber's side of the match
        for size_index, (height, width) in enumerate(sizes):
            message = image_message(camera_frame(image_name, height, width), "rgb8", "camera", (0, 0))
            message.header.stamp.sec = first_sec + size_index
            for frame in range(frames):
                message.header.stamp.nanosec = frame
                publisher.publish(message)
                time.sleep(1.0 / rate_hz)
            time.sleep(1.0)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    topic, image_name, sizes_text, frames, rate_hz, first_sec = sys.argv[1:7]
    sys.exit(main(topic, image_name, sizes_text, int(frames), float(rate_hz), int(first_sec)))
