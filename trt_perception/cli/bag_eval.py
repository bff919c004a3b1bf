"""``trt-perception bag-eval``: replay a bag through a model (or the running node) and measure it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from trt_perception.cli.arguments import add_max_pixels_argument
from trt_perception.errors import TrtPerceptionError
from trt_perception.evaluation.bag_eval import DEFAULT_EVAL_SCORE_THRESHOLD, BagEvalOptions, run_bag_eval
from trt_perception.evaluation.bag_io import STORAGES
from trt_perception.evaluation.fleet import FleetError, FleetOptions, bag_rows, expand_bag_arguments, run_fleet_eval
from trt_perception.evaluation.report import COCO_KEYS, write_report
from trt_perception.pipeline_factory import DEVICES
from trt_perception.spec import load_model_spec


COCO_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR@100")
# Options of one mode only (their defaults are None, so that a given one is seen): refused in the other modes.
LIVE_ONLY = ("node_input", "node_output", "wait_for_node", "answer_timeout")
FLEET_ONLY = ("workers", "cpus_per_task", "gpus_per_task", "force")
# Options of one task only, refused with a spec of the other task (argparse leaves them out unless given,
# so that a given one is seen, ``--ignore-index none`` too; BagEvalOptions has their defaults).
TASK_ONLY = {"segmentation": ("ignore_index", "labels_topic"), "detection": ("detections_topic", "eval_score_threshold")}


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The options among ``names`` that the command line gave (not None), by name."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _ignore_index(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ignore index must be an integer or 'none', got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bag-eval``."""
    parser.add_argument("--bag", nargs="+", required=True, metavar="BAG",
                        help="input rosbag2 (folder, .mcap or .db3); several bags, glob patterns, folders of "
                             "bags or .txt files listing bags run as a fleet job on Ray")
    parser.add_argument("--model-spec", required=True, help="model spec file or bundled spec name")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument("--gt-topic", help="ground-truth topic in the bag (label Image or Detection2DArray), "
                                          "matched by header stamp")
    truth.add_argument("--gt-coco", type=Path, help="COCO json; frame k = k-th image in file_name order")
    truth.add_argument("--gt-masks", type=Path, help="folder of label masks; frame k = k-th file by name")
    parser.add_argument("--out", type=Path, required=True, help="output folder (report, metrics, plots, bag)")
    parser.add_argument("--ignore-index", type=_ignore_index, default=argparse.SUPPRESS,
                        help="segmentation: ground-truth label to ignore (default 255; 'none' for none)")
    parser.add_argument("--labels-topic", default=argparse.SUPPRESS,
                        help="segmentation: output topic for label images (default /labels; always at source "
                             "resolution, as the ground truth)")
    parser.add_argument("--detections-topic", default=argparse.SUPPRESS,
                        help="detection: output topic for detections (default /detections)")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="output bag storage")
    parser.add_argument("--worst-frames", type=int, default=4, help="how many worst frames to draw")
    parser.add_argument("--device", choices=DEVICES,
                        help="offline mode: where pre/post-processing runs (gpu needs CuPy; auto: gpu when "
                             "usable; default cpu)")
    parser.add_argument("--eval-score-threshold", type=float, default=argparse.SUPPRESS,
                        help="detection: lowest score the COCO metrics see (default "
                             f"{DEFAULT_EVAL_SCORE_THRESHOLD}; at most 100 per image; the output bag keeps the "
                             "spec's deployment threshold)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_max_pixels_argument(parser)
    fleet = parser.add_argument_group("many bags (Ray; `pip install 'ray>=2.9'`)")
    fleet.add_argument("--ray-address", help="existing Ray cluster (e.g. ray://head:10001 or auto); "
                                             "default: start a local one")
    fleet.add_argument("--workers", type=int, help="local cluster: CPUs to use (default: all cores)")
    fleet.add_argument("--cpus-per-task", type=int, help="CPUs (and inference threads) per bag task (default 1)")
    fleet.add_argument("--gpus-per-task", type=float, help="GPUs each bag task requests (default 0)")
    fleet.add_argument("--force", action="store_true", default=None,
                       help="re-evaluate bags whose results exist in --out")
    fleet.add_argument("--slice-seconds", type=float,
                       help="split each bag into tasks of this many seconds of recording (default: a task per bag)")
    live = parser.add_argument_group("live mode (needs ROS 2 and the running node)")
    live.add_argument("--live", action="store_true",
                      help="play the images into the running node over DDS and evaluate what it publishes")
    live.add_argument("--rate", type=float, help="frames per second to play at (default: the recorded timing)")
    live.add_argument("--node-input", help="topic the node subscribes to (default: --image-topic)")
    live.add_argument("--node-output", help="topic the node publishes results on "
                                            "(default: /segmentation/labels or /detection/detections)")
    live.add_argument("--wait-for-node", type=float, help="seconds to wait for the node (default 30)")
    live.add_argument("--answer-timeout", type=float,
                      help="seconds a frame waits for the node's answer, the last frames after playing ends "
                           "too (default 3)")


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report and print the headline numbers."""
    try:
        bags = expand_bag_arguments(args.bag)
    except FleetError as error:
        print(f"bag-eval: {error}", file=sys.stderr)
        return 1
    fleet = (len(bags) > 1 or bags != [Path(args.bag[0]).absolute()] or args.ray_address is not None
             or args.slice_seconds is not None)
    try:
        task = load_model_spec(args.model_spec).task
    except TrtPerceptionError as error:
        print(f"bag-eval: {error}", file=sys.stderr)
        return 1
    other_task = [f"--{name.replace('_', '-')}" for other, names in TASK_ONLY.items() if other != task
                  for name in names if name in args]
    if other_task:
        print(f"bag-eval: {', '.join(other_task)}: not for a {task} model", file=sys.stderr)
        return 1
    task_options = {name: getattr(args, name) for names in TASK_ONLY.values() for name in names if name in args}
    options = BagEvalOptions(
        bag=Path(args.bag[0]), model_spec=args.model_spec, image_topic=args.image_topic,
        out=args.out, gt_topic=args.gt_topic, gt_coco=args.gt_coco, gt_masks=args.gt_masks,
        storage=args.storage, worst_frames=args.worst_frames, progress=not args.no_progress,
        device=args.device or "cpu", max_pixels=args.max_pixels, **task_options,
    )
    if args.rate is not None and (args.rate <= 0 or not args.live):
        print(f"bag-eval: --rate must be positive and goes with --live, got {args.rate}", file=sys.stderr)
        return 1
    if args.live and args.device is not None:
        print("bag-eval: --device applies to offline mode; in --live mode the node's own settings decide",
              file=sys.stderr)
        return 1
    if fleet and args.live:
        print("bag-eval: --live plays one bag into the running node; give one bag", file=sys.stderr)
        return 1
    for flags, wanted, mode in ((LIVE_ONLY, args.live, "with --live"),
                                (FLEET_ONLY, fleet, "with several bags (a fleet job on Ray)")):
        given = [f"--{name.replace('_', '-')}" for name in _given(args, flags)]
        if given and not wanted:
            print(f"bag-eval: {', '.join(given)}: only {mode}", file=sys.stderr)
            return 1
    try:
        if fleet:
            return _run_fleet(args, bags, options)
        if args.live:
            try:
                from trt_perception.ros.bag_player import LiveOptions, run_live_eval
            except ImportError as error:
                print(f"bag-eval: --live needs ROS 2 (rclpy): {error}; source scripts/ros_env.sh", file=sys.stderr)
                return 1
            result = run_live_eval(options, LiveOptions(**_given(args, ("rate", *LIVE_ONLY))))
        else:
            result = run_bag_eval(options)
        data = write_report(result, args.out, {
            "bag": str(options.bag), "model_spec": str(args.model_spec), "image_topic": args.image_topic,
            "output_bag": str(args.out / "bag"), "mode": "live" if args.live else "offline",
        })
    except TrtPerceptionError as error:
        print(f"bag-eval: {error}", file=sys.stderr)
        return 1
    return _summarize(data, args.out)


def _run_fleet(args: argparse.Namespace, bags: list[Path], options: BagEvalOptions) -> int:
    """Many bags on Ray: one report over all of them, exit 1 when any bag failed."""
    for name, value, least in (("--workers", args.workers, 1), ("--cpus-per-task", args.cpus_per_task, 1),
                               ("--gpus-per-task", args.gpus_per_task, 0)):
        if value is not None and not value >= least:
            print(f"bag-eval: {name} must be at least {least}, got {value}", file=sys.stderr)
            return 1
    result = run_fleet_eval(FleetOptions(
        bags=bags, per_bag=options, **_given(args, ("ray_address", "slice_seconds", *FLEET_ONLY)),
        progress=not args.no_progress,
    ))
    for outcome in result.failed:
        print(f"bag-eval: {outcome.bag}: {outcome.error or outcome.result and outcome.result.read_error}",
              file=sys.stderr)
    if result.merged is None:
        print(f"bag-eval: none of the {len(bags)} bags could be evaluated", file=sys.stderr)
        return 1
    data = write_report(result.merged, args.out, {
        "bag": f"{len(bags)} bags", "model_spec": str(args.model_spec), "image_topic": args.image_topic,
        "output_bag": str(args.out / "bags" / "*" / "bag"), "mode": "offline",
    }, bag_rows(result))
    code = _summarize(data, args.out)
    if result.failed:
        print(f"bag-eval: {len(result.failed)} of {len(bags)} bags failed or are incomplete (see the report)",
              file=sys.stderr)
        return 1
    return code


def _summarize(data: dict[str, Any], out: Path) -> int:
    """Print the headline numbers; 1 when the bag could not be read through or no frame was processed."""
    frames = data["frames"]
    print(f"{frames['processed']} of {frames['on_topic']} frames processed, {frames['evaluated']} evaluated; "
          f"report in {out / 'report.md'}")
    for reason, count in frames["skipped"].items():
        print(f"skipped {count}: {reason}")
    if "segmentation" in data:
        print(f"mIoU {data['segmentation']['mean_iou']}, pixel accuracy {data['segmentation']['pixel_accuracy']}")
    if "detection" in data:
        det = data["detection"]
        print("COCO: " + ", ".join(f"{name} {det[key]}" for name, key in zip(COCO_NAMES, COCO_KEYS, strict=True)))
        if "deployment" in det:
            deployed = det["deployment"]
            print(f"at the deployment threshold {deployed['score_threshold']}: AP {deployed['map']}, "
                  f"AP50 {deployed['ap50']}, AR@100 {deployed['ar100']}")
    if data["read_error"]:
        print(f"bag-eval: {data['read_error']}; the report covers the messages before that", file=sys.stderr)
        return 1
    if frames["processed"] == 0:
        print("bag-eval: no frame could be processed", file=sys.stderr)
        return 1
    if data["ground_truth"] and frames["evaluated"] == 0:
        print("bag-eval: warning: no frame could be matched with ground truth, so there are no accuracy metrics",
              file=sys.stderr)
    return 0
