"""``trt-perception make-bag``: turn image files (and optional ground truth) into a rosbag2."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from trt_perception.cli.arguments import add_max_pixels_argument, positive_number, stamp_seconds, topic_name
from trt_perception.errors import TrtPerceptionError
from trt_perception.evaluation.bag_io import DEFAULT_DISTRO, DISTRO_STORES, STORAGES
from trt_perception.evaluation.make_bag import ENCODINGS, make_bag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``make-bag``."""
    parser.add_argument("--images", type=Path, nargs="+", required=True,
                        help="a folder of images (sorted by name) or image files in order")
    parser.add_argument("--topic", type=topic_name, required=True, help="image topic, e.g. /camera/image_raw")
    parser.add_argument("--rate", type=positive_number, default=10.0, help="frames per second (default 10)")
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument("--labels", type=Path,
                       help="folder of ground-truth masks (class indices), matched to images by file stem")
    truth.add_argument("--coco", type=Path, help="COCO json with ground-truth boxes, matched by file name")
    parser.add_argument("--gt-topic", type=topic_name, default="/ground_truth", help="topic for the ground truth")
    parser.add_argument("--out", type=Path, required=True, help="output bag folder (must not exist)")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap")
    parser.add_argument("--encoding", choices=ENCODINGS, default="rgb8",
                        help="raw Image encoding, or jpeg/png for CompressedImage")
    parser.add_argument("--frame-id", default="camera", help="header frame_id")
    parser.add_argument("--start-time", type=stamp_seconds, default=None,
                        help="stamp of the first frame in seconds since the epoch (default: now)")
    parser.add_argument("--distro", choices=sorted(DISTRO_STORES), default=DEFAULT_DISTRO,
                        help="ROS 2 distro whose message definitions the bag records")
    add_max_pixels_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Write the bag and print what went into it."""
    start = time.time() if args.start_time is None else args.start_time
    try:
        summary = make_bag(
            args.images, args.out, args.topic, args.rate, storage=args.storage,
            encoding=args.encoding, labels_dir=args.labels, coco=args.coco, gt_topic=args.gt_topic,
            frame_id=args.frame_id, start_ns=round(start * 1e9), distro=args.distro, max_pixels=args.max_pixels,
        )
    except TrtPerceptionError as error:
        print(f"make-bag: {error}", file=sys.stderr)
        return 1
    print(f"wrote {summary.frames} frames to {args.out} ({args.storage}) on {args.topic}")
    if args.labels or args.coco:
        print(f"{summary.ground_truth} ground-truth messages on {args.gt_topic}")
    if summary.frames_without_ground_truth:
        names = ", ".join(summary.frames_without_ground_truth[:10])
        print(f"no ground truth for {len(summary.frames_without_ground_truth)} images: {names}")
    if summary.crowd_boxes_dropped:
        print(f"{summary.crowd_boxes_dropped} COCO crowd boxes left out (Detection2DArray cannot mark them)")
    return 0
