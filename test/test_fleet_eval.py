"""bag-eval over many bags on a local Ray cluster: the merged report equals one process over the same frames.

The reference is the single-bag evaluation (``run_bag_eval``, no Ray, no merging) of one bag that holds
every message of the good bags, byte for byte and in the same order. One Ray cluster serves the module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import ray

from test_bag_eval import HEIGHT, WIDTH, colour_spec, quokka_box, scene_classes, scene_image, scene_truth  # noqa: F401 (fixture)
from trt_perception.cli import main as cli
from trt_perception.evaluation import bag_io
from trt_perception.evaluation.bag_eval import BagEvalOptions
from trt_perception.evaluation.fleet import (
    BagOutcome,
    FleetError,
    FleetOptions,
    JobProgress,
    check_local_resources,
    expand_bag_arguments,
    load_bag_result,
    repeated_stamp,
    spec_key,
    time_slices,
)
from trt_perception.evaluation.make_bag import make_bag

FIXTURES = Path(__file__).parent / "fixtures"
DETECTOR = "centernet_mobilenetv3_coco"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> object:
    """A small local cluster for the whole module (bag-eval uses it instead of starting its own)."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=96 * 1024**2, log_to_driver=False)
    yield ray
    ray.shutdown()


def scene_bag(folder: Path, bag: Path, frames: range, storage: str, encoding: str, start_s: int) -> None:
    """The moving-shapes scene of ``frames`` with its ground-truth masks on /gt."""
    images, masks = folder / f"{bag.name}_images", folder / f"{bag.name}_masks"
    images.mkdir()
    masks.mkdir()
    for frame in frames:
        cv2.imwrite(str(images / f"frame{frame:03d}.png"), cv2.cvtColor(scene_image(scene_classes(frame)), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(masks / f"frame{frame:03d}.png"), scene_truth(frame))
    make_bag([images], bag, "/cam", 10.0, storage=storage, encoding=encoding, labels_dir=masks, gt_topic="/gt",
             start_ns=start_s * 10**9)


def concatenated(bags: list[Path], out: Path) -> Path:
    """One bag with every /cam and /gt message of ``bags``, bytes unchanged, in order."""
    with bag_io.BagWriter(out, "mcap") as writer:
        for bag in bags:
            reader = bag_io.open_reader(bag)
            try:
                for message in bag_io.iter_messages(reader, ["/cam", "/gt"]):
                    writer.write_raw(message.topic, message.msgtype, message.log_time, message.data)
            finally:
                reader.close()
    return out


def evaluate(args: list[str]) -> tuple[int, dict]:
    out = Path(args[args.index("--out") + 1])
    code = cli.main(["bag-eval", *args])
    return code, json.loads((out / "metrics.json").read_text())


def latency_from_stored_results(out: Path, labels: list[str]) -> dict:
    """Percentiles over every frame of the bags, from each bag's stored per-frame latencies."""
    results = [load_bag_result(out / "bags" / label) for label in labels]
    summary = {}
    for stage in results[0].latency.stages:
        values = np.concatenate([r.latency.values(stage) for r in results])
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        summary[stage] = {"p50": p50, "p90": p90, "p99": p99, "mean": values.mean(), "count": values.size}
    return summary


def test_segmentation_fleet_equals_one_process_and_reports_the_broken_bag(
    tmp_path: Path, colour_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    scene_bag(tmp_path, fleet / "a_mcap", range(0, 3), "mcap", "rgb8", 1)
    scene_bag(tmp_path, fleet / "b_sqlite", range(3, 6), "sqlite3", "bgr8", 11)
    scene_bag(tmp_path, fleet / "c_broken", range(6, 8), "mcap", "rgb8", 21)
    (broken,) = (fleet / "c_broken").glob("*.mcap")
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # an interrupted recording
    common = ["--model-spec", str(colour_spec), "--image-topic", "/cam", "--gt-topic", "/gt"]

    code, merged = evaluate(["--bag", str(fleet), *common, "--out", str(tmp_path / "out")])
    single_bag = concatenated([fleet / "a_mcap", fleet / "b_sqlite"], tmp_path / "single_bag")
    single_code, single = evaluate(["--bag", str(single_bag), *common, "--out", str(tmp_path / "single"),
                                    "--no-progress"])

    assert (code, single_code) == (1, 0)
    err = capsys.readouterr().err
    assert f"{fleet / 'c_broken'}: cannot open bag" in err
    assert "bag-eval: bags 3/3, frames 6" in err  # the whole job's progress line
    assert merged["segmentation"] == single["segmentation"]  # every digit
    assert 0.5 < merged["segmentation"]["mean_iou"] < 1.0
    for count in ("on_topic", "processed", "evaluated", "without_ground_truth", "ground_truth_without_frame"):
        assert merged["frames"][count] == single["frames"][count], count
    assert merged["frames"]["processed"] == 6

    rows = {Path(row["bag"]).name: row for row in merged["bags"]}
    assert [rows[name]["status"] for name in ("a_mcap", "b_sqlite", "c_broken")] == ["ok", "ok", "failed"]
    assert "cannot open bag" in rows["c_broken"]["reason"]
    assert rows["a_mcap"]["frames_processed"] == rows["b_sqlite"]["frames_evaluated"] == 3
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Bags" in report and f"`{fleet / 'c_broken'}` | failed: cannot open bag" in report
    assert f"mIoU: **{merged['segmentation']['mean_iou']:.4f}**" in report
    for picture in ("class_scores.png", "latency.png"):
        assert cv2.imread(str(tmp_path / "out" / picture)) is not None
    labels = [rows[name]["output"].removeprefix("bags/") for name in ("a_mcap", "b_sqlite")]
    for label, frames in zip(labels, (range(0, 3), range(3, 6)), strict=True):
        reader = bag_io.open_reader(tmp_path / "out" / "bags" / label / "bag")
        try:
            store = bag_io.typestore(bag_io.bag_distro(reader))
            written = [bag_io.deserialize(m, store) for m in bag_io.iter_messages(reader, ["/labels"])]
        finally:
            reader.close()
        for frame, message in zip(frames, written, strict=True):
            np.testing.assert_array_equal(bag_io.image_from_message(message, bag_io.IMAGE_TYPE).pixels[:, :, 0],
                                          scene_classes(frame))
    assert merged["latency_ms"] == latency_from_stored_results(tmp_path / "out", labels)

    # a second run reuses the finished bags (same numbers), retries the broken one, and --force redoes all
    code, again = evaluate(["--bag", str(fleet), *common, "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 1 and again["segmentation"] == merged["segmentation"]
    assert [row["status"] for row in again["bags"]] == ["reused", "reused", "failed"]
    assert again["latency_ms"] == merged["latency_ms"]
    code, forced = evaluate(["--bag", str(fleet), *common, "--out", str(tmp_path / "out"), "--no-progress", "--force"])
    assert code == 1 and [row["status"] for row in forced["bags"]] == ["ok", "ok", "failed"]
    assert forced["segmentation"] == merged["segmentation"]
    # a new model file (same name, same spec) makes the stored results stale: the bags run again
    model = colour_spec.parent / "colour.onnx"
    stamp = model.stat().st_mtime_ns
    try:
        os.utime(model, ns=(stamp, stamp + 10**9))
        code, remodelled = evaluate(["--bag", str(fleet), *common, "--out", str(tmp_path / "out"), "--no-progress"])
    finally:
        os.utime(model, ns=(stamp, stamp))
    assert code == 1 and [row["status"] for row in remodelled["bags"]] == ["ok", "ok", "failed"]


def test_stored_results_depend_on_the_model_and_decoder_files(tmp_path: Path) -> None:
    """``spec_key`` changes with the model file and the anchors file; a bundled spec given by name counts
    by its files too."""
    np.save(tmp_path / "anchors.npy", np.full((4, 4), 0.5, np.float32))
    (tmp_path / "model.onnx").write_bytes(b"not read here")
    spec = tmp_path / "ssd.yaml"
    spec.write_text("task: detection\nmodel: model.onnx\nlabels: [a]\ninput: {size: [8, 8]}\n"
                    "decoder: {type: ssd, boxes: b, scores: s, anchors: {type: file, path: anchors.npy}}\n")
    first = spec_key(spec)
    assert [Path(name).name for name, _, _ in first["files"]] == ["model.onnx", "anchors.npy"]
    np.save(tmp_path / "anchors.npy", np.full((4, 4), 0.25, np.float32))
    os.utime(tmp_path / "anchors.npy", ns=(0, 10**9))  # the same size: the modification time tells
    second = spec_key(spec)
    assert second != first
    os.utime(tmp_path / "model.onnx", ns=(0, 10**9))
    assert spec_key(spec) != second
    bundled = spec_key("selfie_segmentation")
    assert [Path(name).name for name, _, _ in bundled["files"]] == ["selfie_segmentation.onnx"]
    assert spec_key(tmp_path / "absent.yaml") == {"error": f"model spec file not found: {tmp_path / 'absent.yaml'}"}


def test_a_long_bag_in_time_slices_equals_one_process(tmp_path: Path, colour_spec: Path) -> None:
    scene_bag(tmp_path, tmp_path / "long", range(0, 9), "mcap", "rgb8", 5)  # 0.9 s at 10 Hz
    common = ["--bag", str(tmp_path / "long"), "--model-spec", str(colour_spec), "--image-topic", "/cam",
              "--gt-topic", "/gt", "--no-progress"]

    code, sliced = evaluate([*common, "--out", str(tmp_path / "sliced"), "--slice-seconds", "0.25"])
    single_code, single = evaluate([*common, "--out", str(tmp_path / "single")])

    assert (code, single_code) == (0, 0)
    assert sliced["segmentation"] == single["segmentation"]
    assert sliced["frames"] == single["frames"]
    ((row,),) = [sliced["bags"]]
    assert row["status"] == "ok" and row["frames_processed"] == 9
    slices = sorted((tmp_path / "sliced" / row["output"]).glob("slice-*/bag"))
    assert len(slices) == 4  # frames 0-2, 3-4, 5-7, 8 by log time (0.25 s windows from the first message)
    assert sliced["latency_ms"]["total"]["count"] == 9


def test_slices_too_short_for_the_bag_are_refused_before_any_task(tmp_path: Path) -> None:
    """A slice length that would cut a bag into more than MAX_SLICES_PER_BAG tasks is a clear error,
    not a list of millions of windows (or a MemoryError)."""
    scene_bag(tmp_path, tmp_path / "long", range(0, 9), "mcap", "rgb8", 5)  # 0.8 s from first to last frame
    assert len(time_slices(tmp_path / "long", 0.25)) == 4
    for seconds in (1e-6, 1e-9):
        with pytest.raises(FleetError, match=r"into \d+ tasks, more than 10000 \(each loads the model\)"):
            time_slices(tmp_path / "long", seconds)


def test_time_slices_equal_one_process_when_ground_truth_is_logged_after_its_image(
    tmp_path: Path, colour_spec: Path
) -> None:
    """A live labeller logs each mask 60 ms after its image (header stamps equal): masks of the images at
    the end of a slice are logged in the next slice, and still count with their images."""
    scene_bag(tmp_path, tmp_path / "orig", range(0, 9), "mcap", "rgb8", 5)
    delay = 60_000_000
    reader = bag_io.open_reader(tmp_path / "orig")
    try:
        messages = list(bag_io.iter_messages(reader, ["/cam", "/gt"]))
    finally:
        reader.close()
    # and one mask whose image never came (its stamp 1 ns off frame 2's), logged just inside the second slice
    frame2_truth = [m for m in messages if m.topic == "/gt"][2]
    orphan = bytearray(frame2_truth.data)
    orphan[8:12] = (int.from_bytes(orphan[8:12], "little") + 1).to_bytes(4, "little")  # header.stamp.nanosec
    frame7 = [m for m in messages if m.topic == "/cam"][7]
    with bag_io.BagWriter(tmp_path / "late", "mcap") as writer:
        for message in sorted(messages, key=lambda m: m.log_time + (delay if m.topic == "/gt" else 0)):
            if message is frame7:
                continue  # replaced below
            writer.write_raw(message.topic, message.msgtype, message.log_time + (delay if message.topic == "/gt" else 0),
                             message.data)
        writer.write_raw("/gt", frame2_truth.msgtype, frame2_truth.log_time + delay + 1, bytes(orphan))
        # frame 7 (the last of the third slice; its mask is logged in the fourth) at twice the size:
        # skipped under --max-pixels, so its mask counts once as ground truth without a frame
        big = np.zeros((2 * HEIGHT, 2 * WIDTH, 3), np.uint8)
        header = bag_io.header_message(writer.store, frame7.log_time, "camera")
        writer.write("/cam", bag_io.IMAGE_TYPE, frame7.log_time, bag_io.image_message(writer.store, header, big, "rgb8"))
    common = ["--bag", str(tmp_path / "late"), "--model-spec", str(colour_spec), "--image-topic", "/cam",
              "--gt-topic", "/gt", "--no-progress", "--max-pixels", str(HEIGHT * WIDTH)]

    code, sliced = evaluate([*common, "--out", str(tmp_path / "sliced"), "--slice-seconds", "0.25"])
    single_code, single = evaluate([*common, "--out", str(tmp_path / "single")])

    assert (code, single_code) == (0, 0)
    assert single["frames"]["evaluated"] == 8 and single["frames"]["without_ground_truth"] == 0
    assert single["frames"]["ground_truth_without_frame"] == 2  # the orphan and the big frame's mask
    assert sum(single["frames"]["skipped"].values()) == 1
    assert sliced["frames"] == single["frames"]
    assert sliced["segmentation"] == single["segmentation"]
    ((row,),) = [sliced["bags"]]
    assert len(sorted((tmp_path / "sliced" / row["output"]).glob("slice-*/bag"))) == 4


def restamped(source: Path, out: Path, stamp: Callable[[int], int]) -> Path:
    """``source`` with every /cam and /gt header stamp ``s`` (ns) replaced by ``stamp(s)``; bytes otherwise unchanged."""
    reader = bag_io.open_reader(source)
    try:
        with bag_io.BagWriter(out, "mcap") as writer:
            for message in bag_io.iter_messages(reader, ["/cam", "/gt"]):
                data = bytearray(message.data)  # CDR: 4 encapsulation bytes, then header.stamp.sec, .nanosec
                old = int.from_bytes(data[4:8], "little") * 10**9 + int.from_bytes(data[8:12], "little")
                sec, nanosec = divmod(stamp(old), 10**9)
                data[4:12] = sec.to_bytes(4, "little") + nanosec.to_bytes(4, "little")
                writer.write_raw(message.topic, message.msgtype, message.log_time, bytes(data))
    finally:
        reader.close()
    return out


@pytest.mark.parametrize(("driver", "stamp"), [
    ("stamp-less", lambda ns: 0),  # a driver that fills no stamps: 0 on every frame
    ("coarse", lambda ns: (ns + 50_000_000) // 200_000_000 * 200_000_000),  # 5 Hz clock: frames 2k and 2k+1 share
])
def test_time_slices_equal_one_process_when_header_stamps_repeat(
    tmp_path: Path, colour_spec: Path, capsys: pytest.CaptureFixture[str], driver: str, stamp: Callable[[int], int]
) -> None:
    """Images sharing a header stamp across a slice edge: which mask belongs to which is known only in the
    bag's order, so the bag runs as one task (and says so) instead of losing its ground truth."""
    scene_bag(tmp_path, tmp_path / "orig", range(0, 9), "mcap", "rgb8", 5)
    bag = restamped(tmp_path / "orig", tmp_path / driver, stamp)
    common = ["--bag", str(bag), "--model-spec", str(colour_spec), "--image-topic", "/cam", "--gt-topic", "/gt",
              "--no-progress"]

    code, sliced = evaluate([*common, "--out", str(tmp_path / "sliced"), "--slice-seconds", "0.25"])
    err = capsys.readouterr().err
    single_code, single = evaluate([*common, "--out", str(tmp_path / "single")])

    assert (code, single_code) == (0, 0)
    assert single["frames"]["evaluated"] == 9 and single["frames"]["without_ground_truth"] == 0
    assert sliced["frames"] == single["frames"]
    assert sliced["segmentation"] == single["segmentation"]
    ((row,),) = [sliced["bags"]]
    note = ("evaluated as one task, not in slices: images logged less than 10.25 s apart share the header stamp "
            f"{stamp(5 * 10**9)} ns")  # frame 1 repeats frame 0's
    assert row["note"] == note
    assert f"bag-eval: {bag}: {note}\n" in err
    assert f"| ok ({note}) |" in (tmp_path / "sliced" / "report.md").read_text()
    assert not list((tmp_path / "sliced" / row["output"]).glob("slice-*"))


def test_repeated_stamps_count_within_one_slice_reach(tmp_path: Path, colour_spec: Path) -> None:
    """``repeated_stamp`` finds images sharing a stamp only when logged less than the reach apart."""
    scene_bag(tmp_path, tmp_path / "orig", range(0, 9), "mcap", "rgb8", 5)  # images 0.1 s apart
    frame_mod_3 = lambda ns: (ns - 5 * 10**9 + 50_000_000) // 100_000_000 % 3  # noqa: E731 (stamps 0, 1, 2, 0, ...)
    bag = restamped(tmp_path / "orig", tmp_path / "every_third", frame_mod_3)

    assert repeated_stamp(bag, "/cam", 300_000_000) is None  # frames 0 and 3 are 0.3 s apart: not less
    assert repeated_stamp(bag, "/cam", 300_000_001) == 0  # frame 3 repeats frame 0's stamp
    assert repeated_stamp(tmp_path / "orig", "/cam", 10**12) is None
    assert repeated_stamp(tmp_path / "absent", "/cam", 10**12) is None


def detection_images(folder: Path) -> tuple[dict[str, Path], Path]:
    """Six frames from the fixture images (three at half size) and COCO ground truth drawn by hand."""
    folder.mkdir()
    x1, y1, x2, y2 = quokka_box()
    boxes = {  # class, xyxy at full size; the astronaut also has a dog the detector cannot find
        "quokka": [("bear", [x1, y1, x2, y2])],
        "astronaut": [("person", [20, 0, 380, 512]), ("dog", [400, 400, 500, 500])],
        "coffee": [("cup", [170, 30, 400, 250])],
        "motorcycle_left": [("motorcycle", [100, 60, 680, 440])],
    }
    frames, images, annotations = {}, [], []
    for name, scale in (("quokka", 1.0), ("astronaut", 1.0), ("coffee", 1.0), ("motorcycle_left", 1.0),
                        ("quokka", 0.5), ("coffee", 0.5)):
        source = next((FIXTURES / "images").glob(f"{name}.*"))
        path = folder / f"{name}{'' if scale == 1.0 else '_half'}.png"
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(source)), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        frames[path.stem] = path
        images.append({"id": len(images) + 1, "file_name": path.name})
        for cls, (bx1, by1, bx2, by2) in boxes[name]:
            annotations.append({"id": len(annotations) + 1, "image_id": len(images), "category_id": cls,
                                "bbox": [v * scale for v in (bx1, by1, bx2 - bx1, by2 - by1)]})
    names = sorted({a["category_id"] for a in annotations})
    for annotation in annotations:
        annotation["category_id"] = names.index(annotation["category_id"]) + 1
    coco = folder / "gt.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}))
    return frames, coco


def test_detection_fleet_from_a_list_and_a_glob_equals_one_process(tmp_path: Path) -> None:
    frames, coco = detection_images(tmp_path / "images")
    parts = [("det_d", ["quokka", "astronaut"], "mcap", "rgb8"), ("det_e", ["coffee", "motorcycle_left"], "sqlite3", "rgb8"),
             ("det_f", ["quokka_half", "coffee_half"], "mcap", "bgr8")]
    for index, (name, stems, storage, encoding) in enumerate(parts):
        make_bag([frames[s] for s in stems], tmp_path / name, "/cam", 5.0, storage=storage, encoding=encoding,
                 coco=coco, gt_topic="/gt", start_ns=(1 + 10 * index) * 10**9)
    listing = tmp_path / "bags.txt"
    listing.write_text("# the fleet\ndet_d\ndet_e   # sqlite3\ndet_f*\n")
    assert expand_bag_arguments([str(listing)]) == [tmp_path / name for name, *_ in parts]
    common = ["--model-spec", DETECTOR, "--image-topic", "/cam", "--gt-topic", "/gt", "--no-progress"]

    code, merged = evaluate(["--bag", str(listing), *common, "--out", str(tmp_path / "out"), "--workers", "2"])
    single_bag = concatenated([tmp_path / name for name, *_ in parts], tmp_path / "single_bag")
    single_code, single = evaluate(["--bag", str(single_bag), *common, "--out", str(tmp_path / "single")])

    assert (code, single_code) == (0, 0)
    assert merged["detection"] == single["detection"]  # every digit: COCO over all frames at once
    assert merged["frames"]["evaluated"] == single["frames"]["evaluated"] == 6
    assert 0.2 < merged["detection"]["map"] < 0.9
    assert merged["detection"]["deployment"]["detections"] < merged["detection"]["detections"]
    per_bag = [row["map"] for row in merged["bags"]]
    assert merged["detection"]["map"] != pytest.approx(np.mean(per_bag))  # not an average of per-bag APs
    assert [row["status"] for row in merged["bags"]] == ["ok", "ok", "ok"]


def test_bag_arguments_folders_globs_lists_and_missing_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = tmp_path / "fleet"
    (fleet / "day1").mkdir(parents=True)
    (fleet / "day1" / "metadata.yaml").write_text("")  # a bag folder: one bag, not looked into
    (fleet / "day1" / "day1_0.mcap").write_bytes(b"")
    (fleet / "b.db3").write_bytes(b"")
    (fleet / "a.mcap").write_bytes(b"")
    (fleet / "notes.md").write_text("")
    (tmp_path / "list.txt").write_text("fleet/a.mcap  # again\nmissing_bag\n\nfleet/*.db3\n")
    monkeypatch.chdir(tmp_path)

    bags = expand_bag_arguments(["fleet", "list.txt", str(tmp_path / "nothing_*.mcap")])

    assert bags == [fleet / "a.mcap", fleet / "b.db3", fleet / "day1", tmp_path / "missing_bag",
                    tmp_path / "nothing_*.mcap"]  # duplicates once; what does not exist stays, to be reported


def test_progress_line_and_impossible_resources() -> None:
    now = [100.0]
    progress = JobProgress(4, None, clock=lambda: now[0])
    now[0] = 110.0
    assert progress.line(50) == "bag-eval: bags 0/4, frames 50, 5.0 fps"
    progress.bag_done(BagOutcome("a", "a", SimpleNamespace(frames_on_topic=40), None))  # type: ignore[arg-type]
    progress.bag_done(BagOutcome("b", "b", None, "missing"))  # says nothing about bag lengths
    # 2 bags left of 40 frames each, 20 frames of them done already, at 6 fps: 10 s
    assert progress.line(60) == "bag-eval: bags 2/4, frames 60, 6.0 fps, ETA 10 s"
    per_bag = BagEvalOptions(Path("a"), DETECTOR, "/cam", Path("out"))
    with pytest.raises(FleetError, match="--gpus-per-task 1: the local Ray cluster has 0 GPUs"):
        check_local_resources({"CPU": 2.0}, FleetOptions([Path("a")], per_bag, gpus_per_task=1))
    with pytest.raises(FleetError, match="--cpus-per-task 4: the local Ray cluster has 2 CPUs"):
        check_local_resources({"CPU": 2.0}, FleetOptions([Path("a")], per_bag, cpus_per_task=4))
    check_local_resources({"CPU": 2.0, "GPU": 1.0}, FleetOptions([Path("a")], per_bag, gpus_per_task=0.5))
