"""bag-eval end to end: bags with known ground truth give the metrics computed independently here."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from coco_reference import best_per_image, pycocotools_stats, xywh
from cupy_stand_ins import fresh_cupy_check, no_cupy  # noqa: F401 (fixtures)
from onnx_builders import colour_scores_model
from trt_perception.cli import main as cli
from trt_perception.evaluation import bag_io
from trt_perception.evaluation.bag_eval import BagEvalOptions, run_bag_eval
from trt_perception.evaluation.ground_truth import GroundTruthError, read_coco
from trt_perception.evaluation.make_bag import make_bag
from trt_perception.pipeline import Pipeline
from trt_perception.spec import load_model_spec

FIXTURES = Path(__file__).parent / "fixtures"
QUOKKA = FIXTURES / "images" / "quokka.jpg"
HEIGHT, WIDTH = 48, 64
IGNORE = 255

# ----------------------------------------------------------------------------- synthetic scene


def scene_classes(frame: int) -> np.ndarray:
    """Class map of synthetic frame ``frame``: 0 background, 1 a rectangle, 2 a disc; they move."""
    classes = np.zeros((HEIGHT, WIDTH), np.uint8)
    classes[5 + frame : 25 + frame, 8 + 3 * frame : 30 + 3 * frame] = 1
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    classes[(rows - 30) ** 2 + (cols - 45 + frame) ** 2 <= 64] = 2
    return classes


def scene_image(classes: np.ndarray) -> np.ndarray:
    """RGB picture whose dominant channel is the class: red background, green rectangle, blue disc."""
    image = np.full((*classes.shape, 3), 40, np.uint8)
    for cls in range(3):
        image[..., cls][classes == cls] = 210
    return image


def scene_truth(frame: int) -> np.ndarray:
    """Ground truth that disagrees on purpose: rectangle 2 px wider, a band of ignored rows."""
    truth = scene_classes(frame)
    truth[5 + frame : 25 + frame, 30 + 3 * frame : 32 + 3 * frame] = 1
    truth[:3, :] = IGNORE
    return truth


def expected_segmentation(frames: list[int]) -> dict:
    """Metrics from boolean masks over the frames: the colour model predicts ``scene_classes``."""
    truth = np.concatenate([scene_truth(f).ravel() for f in frames])
    predicted = np.concatenate([scene_classes(f).ravel() for f in frames])
    valid = truth != IGNORE
    ious = {}
    for cls, name in enumerate(["background", "rectangle", "disc"]):
        in_truth, in_pred = (truth == cls) & valid, (predicted == cls) & valid
        ious[name] = (in_truth & in_pred).sum() / (in_truth | in_pred).sum()
    return {
        "class_iou": ious,
        "mean_iou": np.mean(list(ious.values())),
        "pixel_accuracy": (truth[valid] == predicted[valid]).mean(),
        "evaluated_pixels": int(valid.sum()),
    }


@pytest.fixture(scope="module")
def colour_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spec for a graph whose class scores are the image's R, G, B planes (argmax = colour)."""
    folder = tmp_path_factory.mktemp("colour_model")
    onnx.save(colour_scores_model(), folder / "colour.onnx")
    (folder / "colour.yaml").write_text(
        "name: colour_classes\ntask: segmentation\nmodel: colour.onnx\n"
        f"input: {{layout: NCHW, dtype: float32, size: [{HEIGHT}, {WIDTH}], color_order: RGB,"
        " resize: fixed_shape, normalization: {type: unit}}\n"
        "labels: [background, rectangle, disc]\n"
        "decoder: {type: logits, output: scores, layout: NCHW}\n"
    )
    return folder / "colour.yaml"


def write_scene(folder: Path, frames: int, truth_frames: int) -> tuple[Path, Path]:
    """Scene images and ground-truth masks for the first ``truth_frames`` frames, as files."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir()
    masks.mkdir()
    for frame in range(frames):
        cv2.imwrite(str(images / f"frame{frame:03d}.png"), cv2.cvtColor(scene_image(scene_classes(frame)), cv2.COLOR_RGB2BGR))
        if frame < truth_frames:
            cv2.imwrite(str(masks / f"frame{frame:03d}.png"), scene_truth(frame))
    return images, masks


@pytest.mark.parametrize(
    ("storage", "encoding", "truth_source"),
    [("mcap", "rgb8", "topic"), ("sqlite3", "png", "masks"), ("mcap", "bgr8", "masks")],
)
def test_segmentation_metrics_equal_independent_computation(
    tmp_path: Path, colour_spec: Path, storage: str, encoding: str, truth_source: str
) -> None:
    images, masks = write_scene(tmp_path, frames=5, truth_frames=4)
    bag = tmp_path / "bag"
    make_bag([images], bag, "/camera/image", 10.0, storage=storage, encoding=encoding,
             labels_dir=masks if truth_source == "topic" else None, gt_topic="/gt", start_ns=7 * 10**9)
    out = tmp_path / "eval"
    code = cli.main([
        "bag-eval", "--bag", str(bag), "--model-spec", str(colour_spec), "--image-topic", "/camera/image",
        *(["--gt-topic", "/gt"] if truth_source == "topic" else ["--gt-masks", str(masks)]),
        "--out", str(out), "--no-progress", "--storage", storage,
    ])
    assert code == 0

    metrics = json.loads((out / "metrics.json").read_text())
    expected = expected_segmentation([0, 1, 2, 3])
    seg = metrics["segmentation"]
    assert seg["class_iou"] == pytest.approx(expected["class_iou"])
    assert seg["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert seg["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"])
    assert seg["evaluated_pixels"] == expected["evaluated_pixels"]
    assert 0.5 < seg["mean_iou"] < 1.0  # the deliberate disagreement shows
    frames = metrics["frames"]
    assert (frames["on_topic"], frames["processed"], frames["evaluated"]) == (5, 5, 4)
    assert (frames["without_ground_truth"], frames["skipped"]) == (1, {})
    assert set(metrics["latency_ms"]) == {"decode", "preprocess", "inference", "postprocess", "total"}
    assert metrics["latency_ms"]["total"]["count"] == 5
    report = (out / "report.md").read_text()
    assert f"mIoU: **{seg['mean_iou']:.4f}**" in report
    for picture in ["class_scores.png", "latency.png", *(w["image"] for w in metrics["worst_frames"])]:
        assert cv2.imread(str(out / picture)) is not None, picture
    # the worst frame is the one with the lowest frame mIoU, computed here
    frame_miou = [expected_segmentation([f])["mean_iou"] for f in range(4)]
    assert metrics["worst_frames"][0]["index"] == int(np.argmin(frame_miou))

    # output bag: original images unchanged, labels = the scene's classes, header copied
    inputs = _messages(bag, "/camera/image")
    outputs = _messages(out / "bag", "/camera/image")
    assert [m.data for m, _ in outputs] == [m.data for m, _ in inputs]
    labels = _messages(out / "bag", "/labels")
    assert len(labels) == 5
    for frame, ((message, msg), (_, image_msg)) in enumerate(zip(labels, inputs, strict=True)):
        assert msg.encoding == "mono8" and msg.header == image_msg.header
        assert message.log_time == bag_io.stamp_ns(image_msg.header) == 7 * 10**9 + frame * 10**8
        np.testing.assert_array_equal(bag_io.image_from_message(msg, message.msgtype).pixels[:, :, 0], scene_classes(frame))


def _messages(bag: Path, topic: str) -> list[tuple[bag_io.BagMessage, object]]:
    reader = bag_io.open_reader(bag)
    try:
        store = bag_io.typestore(bag_io.bag_distro(reader))
        return [(m, bag_io.deserialize(m, store)) for m in bag_io.iter_messages(reader, [topic])]
    finally:
        reader.close()


def quokka_polygon_mask() -> np.ndarray:
    """The quokka's annotated outline rasterized as a 0/1 mask (class 1 = the animal)."""
    annotations = json.loads((FIXTURES / "images" / "quokka_annotations.json").read_text())
    points = np.array([[p["x"], p["y"]] for p in annotations["polygons"][0]["keypoints"]], np.int32)
    mask = np.zeros((643, 960), np.uint8)
    cv2.fillPoly(mask, [points], 1)
    return mask


def test_real_model_on_the_quokka_polygon(tmp_path: Path) -> None:
    """selfie_segmentation's mask of the quokka scored against the annotated outline."""
    masks = tmp_path / "masks"
    masks.mkdir()
    truth = quokka_polygon_mask()
    cv2.imwrite(str(masks / "quokka.png"), truth)
    bag = tmp_path / "bag"
    make_bag([QUOKKA], bag, "/cam", 1.0, labels_dir=masks, gt_topic="/gt")
    assert cli.main(["bag-eval", "--bag", str(bag), "--model-spec", "selfie_segmentation", "--image-topic", "/cam",
                     "--gt-topic", "/gt", "--out", str(tmp_path / "out"), "--no-progress"]) == 0

    pipeline = Pipeline.from_spec("selfie_segmentation")
    labels = pipeline.run(cv2.cvtColor(cv2.imread(str(QUOKKA)), cv2.COLOR_BGR2RGB), "RGB").labels  # type: ignore[union-attr]
    pipeline.close()
    expected = {}
    for cls, name in enumerate(["background", "person"]):
        expected[name] = ((truth == cls) & (labels == cls)).sum() / ((truth == cls) | (labels == cls)).sum()
    seg = json.loads((tmp_path / "out" / "metrics.json").read_text())["segmentation"]
    assert seg["class_iou"] == pytest.approx(expected)
    assert seg["pixel_accuracy"] == pytest.approx((truth == labels).mean())
    assert seg["class_iou"]["person"] > 0.8  # the model finds the animal (as "person")


# ----------------------------------------------------------------------------- bad input


def test_bad_frames_are_counted_per_reason_and_left_out(tmp_path: Path, colour_spec: Path) -> None:
    bag = tmp_path / "bag"
    with bag_io.BagWriter(bag, "mcap") as writer:
        store = writer.store
        good_frames = []
        for frame in range(6):
            header = bag_io.header_message(store, (frame + 1) * 10**9, "cam")
            classes = scene_classes(frame)
            message = bag_io.image_message(store, header, scene_image(classes), "rgb8")
            data = bytes(store.serialize_cdr(message, bag_io.IMAGE_TYPE))
            if frame == 1:
                data = data[: len(data) // 3]  # truncated in the middle of the pixels
            elif frame == 2:
                data = data[:30]  # cut inside the header
            elif frame == 3:
                message.encoding = "32FC1"
                data = bytes(store.serialize_cdr(message, bag_io.IMAGE_TYPE))
            elif frame == 4:
                message.step = WIDTH * 3 + 2  # claims row padding the data does not have
                data = bytes(store.serialize_cdr(message, bag_io.IMAGE_TYPE))
            else:
                good_frames.append(frame)
            writer.write_raw("/cam", bag_io.IMAGE_TYPE, (frame + 1) * 10**9, data)
            writer.write("/gt", bag_io.IMAGE_TYPE, (frame + 1) * 10**9,
                         bag_io.image_message(store, header, scene_truth(frame), "mono8"))
        # a ground-truth message for no frame, and one with a colour encoding
        writer.write("/gt", bag_io.IMAGE_TYPE, 99 * 10**9,
                     bag_io.image_message(store, bag_io.header_message(store, 99 * 10**9, "cam"), scene_truth(0), "mono8"))
        writer.write("/gt", bag_io.IMAGE_TYPE, 100 * 10**9,
                     bag_io.image_message(store, bag_io.header_message(store, 1 * 10**9, "cam"),
                                          scene_image(scene_classes(0)), "rgb8"))

    result = run_bag_eval(BagEvalOptions(bag, colour_spec, "/cam", tmp_path / "out", gt_topic="/gt", progress=False))

    assert good_frames == [0, 5]
    assert result.frames_on_topic == 6 and result.frames_processed == 2 and result.frames_evaluated == 2
    skipped = result.skipped
    assert sum(skipped.values()) == 4
    assert skipped.get("corrupt sensor_msgs/msg/Image message (cannot deserialize)", 0) >= 1
    assert any("32FC1" in reason for reason in skipped)
    assert result.truth_unusable == {
        "ground-truth image encoding 'rgb8' is not a class-index image (mono8/mono16)": 1
    }
    # ground truth of the 4 skipped frames and the one at 99 s found no frame
    assert result.truths_without_frame == 5
    expected = expected_segmentation(good_frames)
    assert result.segmentation is not None
    assert result.segmentation.mean_iou == pytest.approx(expected["mean_iou"])


def test_ground_truth_that_does_not_fit_is_counted_not_scored(tmp_path: Path, colour_spec: Path) -> None:
    images, masks = write_scene(tmp_path, frames=4, truth_frames=4)
    cv2.imwrite(str(masks / "frame001.png"), np.zeros((HEIGHT + 1, WIDTH), np.uint8))  # wrong size
    bad_labels = scene_truth(2)
    bad_labels[10, 10] = 7  # not a class of the 3-class model, not the ignore index
    cv2.imwrite(str(masks / "frame002.png"), bad_labels)
    make_bag([images], tmp_path / "bag", "/cam", 10.0)

    result = run_bag_eval(BagEvalOptions(tmp_path / "bag", colour_spec, "/cam", tmp_path / "out",
                                         gt_masks=masks, progress=False))

    assert result.frames_processed == 4 and result.frames_evaluated == 2
    assert result.truth_unusable == {
        f"ground-truth mask size {WIDTH}x{HEIGHT + 1} differs from the image size {WIDTH}x{HEIGHT}": 1,
        "ground truth holds labels [7] outside 0..2 (ignore_index 255)": 1,
    }
    assert result.segmentation is not None
    assert result.segmentation.mean_iou == pytest.approx(expected_segmentation([0, 3])["mean_iou"])


def test_palette_masks_are_read_as_indices_and_an_unreadable_mask_is_counted(tmp_path: Path, colour_spec: Path) -> None:
    """PASCAL VOC stores masks as palette PNGs (the palette index is the class; OpenCV reads the
    palette's colours). One truncated mask file is unusable ground truth, counted, not fatal."""
    from PIL import Image

    images, masks = write_scene(tmp_path, frames=4, truth_frames=4)
    for frame in (0, 3):
        paletted = Image.frombytes("P", (WIDTH, HEIGHT), scene_truth(frame).tobytes())
        paletted.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255, 255, 255] * 253)  # VOC-like colours
        paletted.save(masks / f"frame{frame:03d}.png")
        assert cv2.imread(str(masks / f"frame{frame:03d}.png"), cv2.IMREAD_UNCHANGED).ndim == 3  # colours
    data = (masks / "frame001.png").read_bytes()
    (masks / "frame001.png").write_bytes(data[: len(data) // 2])
    make_bag([images], tmp_path / "bag", "/cam", 10.0)

    result = run_bag_eval(BagEvalOptions(tmp_path / "bag", colour_spec, "/cam", tmp_path / "out",
                                         gt_masks=masks, progress=False))

    assert result.frames_processed == 4 and result.frames_evaluated == 3
    assert result.truth_unusable == {f"cannot read mask {masks / 'frame001.png'}": 1}
    assert result.segmentation is not None
    assert result.segmentation.mean_iou == pytest.approx(expected_segmentation([0, 2, 3])["mean_iou"])


def test_ground_truth_boxes_that_are_not_finite_are_counted_not_drawn(tmp_path: Path) -> None:
    """A NaN or infinite ground-truth box (topic or COCO file) is refused with a reason, and the
    report is still written."""
    x1, y1, x2, y2 = quokka_box()
    for bbox, name in (([x1, y1, float("nan"), y2 - y1], "nan"), ([x1, y1, float("inf"), y2 - y1], "inf")):
        coco = tmp_path / f"{name}.json"
        coco.write_text(json.dumps({
            "images": [{"id": 1, "file_name": "quokka.jpg", "width": 960, "height": 643}],
            "categories": [{"id": 1, "name": "bear"}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0}],
        }))
        with pytest.raises(GroundTruthError, match=f"annotation 7 has a bbox value that is not finite"):
            read_coco(coco)
    # a Detection2DArray on the topic, written as a recorder would (no checks on the way in)
    bag = tmp_path / "bag"
    make_bag([QUOKKA], bag, "/cam", 1.0, encoding="jpeg")
    ((image_message, image_msg),) = _messages(bag, "/cam")
    store = bag_io.typestore()
    truth = bag_io.detection_array_message(store, image_msg.header, [[x1, y1, float("nan"), y2]], ["bear"], [1.0])
    nan_bag = tmp_path / "nan_bag"
    with bag_io.BagWriter(nan_bag) as writer:
        writer.write_raw("/cam", image_message.msgtype, image_message.log_time, image_message.data)
        writer.write("/gt", bag_io.DETECTIONS_TYPE, image_message.log_time + 1, truth)
    out = tmp_path / "out"
    assert cli.main(["bag-eval", "--bag", str(nan_bag), "--model-spec", "centernet_mobilenetv3_coco", "--image-topic",
                     "/cam", "--gt-topic", "/gt", "--out", str(out), "--no-progress"]) == 0
    frames = json.loads((out / "metrics.json").read_text())["frames"]
    assert frames["ground_truth_unusable"] == {
        "ground-truth Detection2DArray has a box with a coordinate or size that is not finite": 1
    }
    assert (out / "report.md").is_file()


def test_damaged_bag_reports_what_was_read_before_the_damage(
    tmp_path: Path, colour_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = tmp_path / "bag"
    make_bag([FIXTURES / "images" / "coffee.png"] * 6, bag, "/cam", 10.0, storage="sqlite3")
    (database,) = bag.glob("*.db3")
    size = database.stat().st_size
    with database.open("r+b") as file:  # overwrite two pages in the middle, as a failing disk would
        file.seek(size // 2 // 4096 * 4096)
        file.write(b"\xff" * 8192)

    out = tmp_path / "out"
    code = cli.main(["bag-eval", "--bag", str(bag), "--model-spec", str(colour_spec), "--image-topic", "/cam",
                     "--out", str(out), "--no-progress"])

    assert code == 1
    assert "is damaged: reading stopped after" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["read_error"].startswith(f"bag {bag} is damaged: reading stopped after")
    assert 0 < metrics["frames"]["processed"] < 6
    assert "Everything below covers only the messages before that." in (out / "report.md").read_text()


def test_unknown_topic_and_empty_topic_are_clear_errors(
    tmp_path: Path, colour_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = tmp_path / "bag"
    make_bag([QUOKKA], bag, "/cam", 1.0)
    args = ["bag-eval", "--bag", str(bag), "--model-spec", str(colour_spec), "--out", str(tmp_path / "o"), "--no-progress"]
    assert cli.main([*args, "--image-topic", "/camera"]) == 1
    assert "'/camera' is not in bag" in capsys.readouterr().err
    empty = tmp_path / "empty"
    with bag_io.BagWriter(empty, "sqlite3") as writer:
        writer._connection("/cam", bag_io.IMAGE_TYPE)  # a topic that never got a message
    assert cli.main([*args[:2], str(empty), *args[3:], "--image-topic", "/cam"]) == 1
    assert "has no messages" in capsys.readouterr().err
    assert cli.main([*args, "--image-topic", "/cam", "--gt-coco", str(tmp_path / "x.json")]) == 1
    assert "--gt-coco needs a detection model" in capsys.readouterr().err
    no_topics = tmp_path / "no_topics"
    with bag_io.BagWriter(no_topics, "mcap"):
        pass
    assert cli.main([*args[:2], str(no_topics), *args[3:], "--image-topic", "/cam"]) == 1
    assert "'/cam' is not in bag" in (err := capsys.readouterr().err) and "the bag has no topics" in err


def test_device_option(tmp_path: Path, colour_spec: Path, capsys: pytest.CaptureFixture[str], no_cupy: None) -> None:
    """Offline ``--device``: gpu without CuPy is a clear error, auto falls back to (and reports) cpu; not with --live."""
    bag = tmp_path / "bag"
    make_bag([QUOKKA], bag, "/cam", 1.0)
    args = ["bag-eval", "--bag", str(bag), "--model-spec", str(colour_spec), "--image-topic", "/cam", "--no-progress"]
    assert cli.main([*args, "--out", str(tmp_path / "gpu"), "--device", "gpu"]) == 1
    assert "needs CuPy, which is not installed" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(tmp_path / "auto"), "--device", "auto"]) == 0
    assert json.loads((tmp_path / "auto" / "metrics.json").read_text())["device"] == "cpu"
    assert "- device: `cpu`" in (tmp_path / "auto" / "report.md").read_text()
    assert cli.main([*args, "--out", str(tmp_path / "live"), "--device", "cpu", "--live"]) == 1
    assert "--device applies to offline mode" in capsys.readouterr().err


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_frames_over_max_pixels_are_skipped_before_decoding(tmp_path: Path, colour_spec: Path, storage: str) -> None:
    """``--max-pixels``: a frame larger than the limit is counted as skipped with the reason; the rest run."""
    images = tmp_path / "images"
    images.mkdir()
    small, large = np.zeros((20, 30, 3), np.uint8), np.zeros((60, 80, 3), np.uint8)  # 600 and 4800 pixels
    for name, picture in (("a.png", small), ("b.png", large), ("c.png", small)):
        cv2.imwrite(str(images / name), picture)
    bag = tmp_path / "bag"
    make_bag([images], bag, "/cam", 1.0, storage=storage, encoding="png")
    out = tmp_path / "eval"
    assert cli.main(["bag-eval", "--bag", str(bag), "--model-spec", str(colour_spec), "--image-topic", "/cam",
                     "--out", str(out), "--no-progress", "--storage", storage, "--max-pixels", "1000"]) == 0
    frames = json.loads((out / "metrics.json").read_text())["frames"]
    assert (frames["on_topic"], frames["processed"]) == (3, 2)
    (reason,) = frames["skipped"]
    assert "60 = 4800 pixels, more than max_pixels 1000" in reason


# ----------------------------------------------------------------------------- detection


def quokka_box() -> list[float]:
    box = json.loads((FIXTURES / "images" / "quokka_annotations.json").read_text())["bounding_boxes"][0]
    return [box["x1"], box["y1"], box["x2"], box["y2"]]


def test_detection_on_the_quokka_box_gives_hand_computed_ap(tmp_path: Path) -> None:
    spec = "centernet_mobilenetv3_coco"
    x1, y1, x2, y2 = quokka_box()
    coco = tmp_path / "gt.json"
    # the detector calls the quokka a bear (see MANIFEST.md), so the ground truth says bear
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "quokka.jpg", "width": 960, "height": 643}],
        "categories": [{"id": 1, "name": "bear"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0}],
    }))
    bag = tmp_path / "bag"
    make_bag([QUOKKA], bag, "/cam", 1.0, storage="sqlite3", encoding="jpeg", coco=coco, gt_topic="/gt")
    # the same box with the class as its index, as the nodes write class_id by default
    coco_by_index = tmp_path / "gt_by_index.json"
    by_index = json.loads(coco.read_text())
    by_index["categories"][0]["name"] = str(list(load_model_spec(spec).labels or ()).index("bear"))
    coco_by_index.write_text(json.dumps(by_index))
    bag_by_index = tmp_path / "bag_by_index"
    make_bag([QUOKKA], bag_by_index, "/cam", 1.0, encoding="jpeg", coco=coco_by_index, gt_topic="/gt")

    # independent: the pipeline on the decoded file, at the spec's threshold (what the output bag
    # holds) and at the COCO protocol's 0.001 (what is scored); AP at IoU t = 1 / rank of the first
    # bear box matching at t (COCO's interpolated precision is then 1/rank at every recall), else 0
    image = cv2.cvtColor(cv2.imread(str(QUOKKA)), cv2.COLOR_BGR2RGB)
    pipeline = Pipeline.from_spec(spec)
    direct = pipeline.run(image, "RGB")
    pipeline.detection_filter = dataclasses.replace(pipeline.detection_filter, score_threshold=0.001)
    scored = pipeline.run(image, "RGB")
    pipeline.close()
    assert len(scored.detections) > len(direct.detections)
    bears = [box for box, name in zip(scored.detections.boxes, scored.names(), strict=True) if name == "bear"]
    ious = []
    for bx1, by1, bx2, by2 in bears:
        inter = max(0, min(x2, bx2) - max(x1, bx1)) * max(0, min(y2, by2) - max(y1, by1))
        ious.append(inter / ((x2 - x1) * (y2 - y1) + (bx2 - bx1) * (by2 - by1) - inter))
    assert ious and max(ious) > 0.9  # what MANIFEST.md reports (0.94)

    def ap_at(threshold: float) -> float:
        rank = next((r for r, iou in enumerate(ious, 1) if iou >= threshold), None)
        return 0.0 if rank is None else 1.0 / rank

    thresholds = np.linspace(0.5, 0.95, 10)
    for number, (truth_bag, truth_args) in enumerate(
        ((bag, ["--gt-topic", "/gt"]), (bag, ["--gt-coco", str(coco)]), (bag_by_index, ["--gt-topic", "/gt"]))
    ):
        out = tmp_path / f"eval{number}"
        assert cli.main(["bag-eval", "--bag", str(truth_bag), "--model-spec", spec, "--image-topic", "/cam",
                         *truth_args, "--out", str(out), "--no-progress"]) == 0
        det = json.loads((out / "metrics.json").read_text())["detection"]
        assert det["ap50"] == pytest.approx(ap_at(0.5))
        assert det["ap75"] == pytest.approx(ap_at(0.75))
        assert det["map"] == pytest.approx(np.mean([ap_at(t) for t in thresholds]))
        assert det["class_ap"] == pytest.approx({"bear": det["map"]})
        assert det["ground_truth_boxes"] == 1 and det["detections"] == len(scored.detections)
        assert det["deployment"]["detections"] == len(direct.detections)

    # output bag: Detection2DArray with source-pixel boxes, class names, scores, header copied
    ((message, detections),) = _messages(out / "bag", "/detections")
    ((_, image_msg),) = _messages(bag, "/cam")
    assert message.msgtype == bag_io.DETECTIONS_TYPE and detections.header == image_msg.header
    boxes, names, scores = bag_io.detections_from_message(detections)
    np.testing.assert_allclose(boxes, direct.detections.boxes, atol=1e-3)
    assert names == direct.names()
    np.testing.assert_allclose(scores, direct.detections.scores, rtol=1e-6)


def test_coco_metrics_of_the_real_detector_equal_pycocotools(tmp_path: Path) -> None:
    """centernet on the fixture images, full size and quarter size (small and medium objects): every
    COCO number of bag-eval equals pycocotools' own evaluation of the detector's output above 0.001.

    The ground truth is generated: the confident detections moved a little (hits) or a lot (misses),
    some renamed, COCO areas below the box areas, a crowd region and an object the detector misses."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("astronaut.png", "coffee.png", "motorcycle_left.png", "quokka.jpg"):
        picture = cv2.imread(str(FIXTURES / "images" / name))
        cv2.imwrite(str(images / f"{Path(name).stem}.png"), picture)
        cv2.imwrite(str(images / f"{Path(name).stem}_quarter.png"),
                    cv2.resize(picture, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA))
    files = sorted(images.iterdir())
    labels = (FIXTURES / "models" / "coco80_labels.txt").read_text().split("\n")
    category_of = {name: k + 1 for k, name in enumerate(n for n in labels if n)}
    rng = np.random.default_rng(3)
    pipeline = Pipeline.from_spec("centernet_mobilenetv3_coco")
    pipeline.detection_filter = dataclasses.replace(pipeline.detection_filter, score_threshold=0.001)
    gt_images, annotations, results = [], [], []
    for image_id, path in enumerate(files, start=1):
        picture = cv2.imread(str(path))
        height, width = picture.shape[:2]
        result = pipeline.run(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB), "RGB")
        gt_images.append({"id": image_id, "file_name": path.name, "width": width, "height": height})
        truth = [(box, name) for box, score, name in zip(result.detections.boxes, result.detections.scores,
                                                          result.names(), strict=True) if score >= 0.2]
        truth.append((np.array([0.1, 0.1, 0.3, 0.4]) * [width, height, width, height], "person"))  # missed
        for box, name in truth:
            size = np.tile(box[2:] - box[:2], 2)
            moved = box + rng.normal(0, 0.04 if rng.random() < 0.7 else 0.3, 4) * size
            moved[2:] = np.maximum(moved[2:], moved[:2] + 2)
            renamed = name if rng.random() < 0.8 else str(rng.choice(["dog", "cat", "car"]))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_of[renamed],
                "bbox": xywh(moved), "area": float(np.prod(moved[2:] - moved[:2]) * rng.uniform(0.5, 1.0)),
                "iscrowd": int(len(annotations) == 3),
            })
        results += [{"image_id": image_id, "category_id": category_of[name], "bbox": xywh(box), "score": float(score)}
                    for box, score, name in zip(result.detections.boxes, result.detections.scores,
                                                result.names(), strict=True)]
    pipeline.close()
    ground_truth = {"images": gt_images, "annotations": annotations,
                    "categories": [{"id": i, "name": n} for n, i in category_of.items()]}
    coco = tmp_path / "gt.json"
    coco.write_text(json.dumps(ground_truth))
    expected = pycocotools_stats(ground_truth, best_per_image(results), tmp_path)

    bag = tmp_path / "bag"
    make_bag([images], bag, "/cam", 5.0)
    out = tmp_path / "eval"
    assert cli.main(["bag-eval", "--bag", str(bag), "--model-spec", "centernet_mobilenetv3_coco",
                     "--image-topic", "/cam", "--gt-coco", str(coco), "--out", str(out), "--no-progress"]) == 0

    det = json.loads((out / "metrics.json").read_text())["detection"]
    assert {key: det[key] for key in expected} == pytest.approx(expected, abs=1e-12)
    assert None not in (expected["ap_small"], expected["ap_medium"], expected["ap_large"])
    assert 0.05 < expected["map"] < 0.95  # neither trivial nor hopeless
    assert det["detections"] == len(results) > det["deployment"]["detections"]
    report = (out / "report.md").read_text()
    assert "| AP | AP50 | AP75 | APs | APm | APl | AR@100 |" in report
    assert "At the deployment threshold (score >= 0.3" in report


def test_evaluation_threshold_above_the_deployment_threshold_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = tmp_path / "bag"
    make_bag([QUOKKA], bag, "/cam", 1.0)
    assert cli.main(["bag-eval", "--bag", str(bag), "--model-spec", "centernet_mobilenetv3_coco", "--image-topic",
                     "/cam", "--out", str(tmp_path / "out"), "--no-progress", "--eval-score-threshold", "0.5"]) == 1
    assert "evaluation score threshold 0.5 must lie in [0, 0.3]" in capsys.readouterr().err


def test_output_detections_deserialize_in_rclpy(tmp_path: Path) -> None:
    """The bag's Detection2DArray bytes are what rclpy (ROS 2 vision_msgs) reads."""
    serialization = pytest.importorskip("rclpy.serialization", reason="needs the repo's .venv (rclpy)")
    from vision_msgs.msg import Detection2DArray

    store = bag_io.typestore()
    header = bag_io.header_message(store, 1_234_567_890_123, "camera_optical")
    message = bag_io.detection_array_message(store, header, [[10.5, 20, 110, 220.25], [0, 0, 4, 4]],
                                             ["bear", "person"], [0.37, 0.9])
    bag = tmp_path / "bag"
    with bag_io.BagWriter(bag, "mcap") as writer:
        writer.write("/detections", bag_io.DETECTIONS_TYPE, 1, message)
    ((raw, _),) = _messages(bag, "/detections")

    decoded = serialization.deserialize_message(raw.data, Detection2DArray)

    assert (decoded.header.stamp.sec, decoded.header.stamp.nanosec) == (1234, 567_890_123)
    assert decoded.header.frame_id == "camera_optical"
    first = decoded.detections[0]
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (60.25, 120.125)
    assert (first.bbox.size_x, first.bbox.size_y) == (99.5, 200.25)
    assert first.results[0].hypothesis.class_id == "bear"
    assert math.isclose(first.results[0].hypothesis.score, 0.37)
    assert decoded.detections[1].results[0].hypothesis.class_id == "person" and first.id == ""
    assert first.results[0].pose.pose.orientation.w == 1.0


# ----------------------------------------------------------------------------- live mode


def test_live_mode_against_the_running_segmentation_node(tmp_path: Path, colour_spec: Path) -> None:
    """The bag played into the real node over DDS gives the same metrics as the direct computation."""
    pytest.importorskip("rclpy", reason="needs the repo's .venv (rclpy)")
    from node_harness import NodeProcess, isolated_ros_environment

    images, masks = write_scene(tmp_path, frames=5, truth_frames=4)
    bag = tmp_path / "bag"
    make_bag([images], bag, "/camera/image", 5.0, labels_dir=masks, gt_topic="/gt", start_ns=7 * 10**9)
    node = NodeProcess("segmentation_node", ["-p", f"model_spec:={colour_spec}", "-r", "image:=/camera/image"],
                       isolated_ros_environment())
    try:
        node.wait_for_output("colour_classes (segmentation")
        out = tmp_path / "live"
        code = cli.main(["bag-eval", "--live", "--bag", str(bag), "--model-spec", str(colour_spec),
                         "--image-topic", "/camera/image", "--gt-topic", "/gt", "--out", str(out), "--no-progress"])
    finally:
        node.stop()
    assert code == 0, node.output

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "live"
    assert metrics["frames"]["processed"] == 5 and metrics["frames"]["evaluated"] == 4, metrics["frames"]
    expected = expected_segmentation([0, 1, 2, 3])
    assert metrics["segmentation"]["class_iou"] == pytest.approx(expected["class_iou"])
    assert metrics["segmentation"]["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert metrics["segmentation"]["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"])
    latency = metrics["latency_ms"]["end_to_end"]
    assert latency["count"] == 5 and 0 < latency["p50"] <= latency["p99"]
    assert cv2.imread(str(out / "latency.png")) is not None
    assert "from publishing the image to receiving the node's answer" in (out / "report.md").read_text()
    # the node's own messages are recorded, their headers those of the played frames
    labels = _messages(out / "bag", "/segmentation/labels")
    inputs = _messages(bag, "/camera/image")
    assert [msg.header for _, msg in labels] == [msg.header for _, msg in inputs]
    for frame, (message, msg) in enumerate(labels):
        np.testing.assert_array_equal(bag_io.image_from_message(msg, message.msgtype).pixels[:, :, 0], scene_classes(frame))


def test_live_mode_without_a_node_fails_clearly(tmp_path: Path, colour_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rclpy", reason="needs the repo's .venv (rclpy)")
    from node_harness import isolated_ros_environment

    isolated_ros_environment()
    bag = tmp_path / "bag"
    make_bag([QUOKKA], bag, "/cam", 1.0)
    code = cli.main(["bag-eval", "--live", "--bag", str(bag), "--model-spec", str(colour_spec), "--image-topic", "/cam",
                     "--out", str(tmp_path / "o"), "--no-progress", "--wait-for-node", "1"])
    assert code == 1
    assert "the node did not answer within 1 s: subscribers of /cam: 0" in capsys.readouterr().err


def test_live_frames_the_node_leaves_unanswered_are_given_up_while_the_bag_plays(
    tmp_path: Path, colour_spec: Path
) -> None:
    """Frames wait for their answer (each with its image, ground truth being given) at most
    ``answer_timeout``: a node that drops or never answers frames cannot make the player's memory
    grow with the length of the bag."""
    pytest.importorskip("rclpy", reason="needs the repo's .venv (rclpy)")
    from node_harness import isolated_ros_environment
    from trt_perception.ros.bag_player import LiveOptions, live_player

    isolated_ros_environment()
    images, masks = write_scene(tmp_path, frames=8, truth_frames=8)
    bag = tmp_path / "bag"
    make_bag([images], bag, "/cam", 10.0, labels_dir=masks, gt_topic="/gt")
    options = BagEvalOptions(bag=bag, model_spec=str(colour_spec), image_topic="/cam", out=tmp_path / "out",
                             gt_topic="/gt", progress=False)
    # 10 frames/s: each frame's predecessor has waited 0.1 s when it is sent, past the 0.05 s
    with live_player(options, LiveOptions(rate=10.0, answer_timeout=0.05)) as player:
        player._play_frames()  # no node answers, as for frames a node drops
        assert len(player.pending) == 1 and all(frame.message is not None for frame in player.pending.values())
        assert dict(player.setup.evaluator.skipped) == {
            "no answer from the node within 0.05 s (dropped by the node, lost, or rejected as bad input)": 7
        }


def test_live_detection_with_compressed_frames_equals_offline(tmp_path: Path) -> None:
    """jpeg frames played into the detection node give the offline replay's detections and metrics."""
    pytest.importorskip("rclpy", reason="needs the repo's .venv (rclpy)")
    from node_harness import NodeProcess, isolated_ros_environment

    spec = "centernet_mobilenetv3_coco"
    x1, y1, x2, y2 = quokka_box()
    coco = tmp_path / "gt.json"
    coco.write_text(json.dumps({
        "images": [{"id": i, "file_name": name} for i, name in enumerate(["coffee.png", "quokka.jpg"], 1)],
        "categories": [{"id": 1, "name": "bear"}, {"id": 2, "name": "cup"}],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1]}],
    }))
    bag = tmp_path / "bag"
    make_bag([FIXTURES / "images" / "coffee.png", QUOKKA], bag, "/cam/compressed", 2.0, encoding="jpeg",
             coco=coco, gt_topic="/gt", storage="sqlite3")
    common = ["--bag", str(bag), "--model-spec", spec, "--image-topic", "/cam/compressed", "--gt-topic", "/gt",
              "--no-progress"]
    assert cli.main(["bag-eval", *common, "--out", str(tmp_path / "offline")]) == 0
    node = NodeProcess("detection_node", ["-p", f"model_spec:={spec}", "-p", "use_compressed:=true",
                                          "-r", "image/compressed:=/cam/compressed"], isolated_ros_environment())
    try:
        node.wait_for_output(f"{spec} (detection")
        code = cli.main(["bag-eval", "--live", *common, "--out", str(tmp_path / "live"), "--rate", "1"])
    finally:
        node.stop()
    assert code == 0, node.output

    offline = json.loads((tmp_path / "offline" / "metrics.json").read_text())
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live["frames"]["processed"] == 2 and live["frames"]["evaluated"] == 2, live["frames"]
    # the node publishes what passes its threshold: the live scores are the offline deployment view
    deployed = offline["detection"]["deployment"]
    assert deployed.pop("score_threshold") == 0.3
    assert set(live["detection"].pop("class_ap")) == set(offline["detection"]["class_ap"])
    assert live["detection"] == pytest.approx(deployed)
    assert live["detection"]["map"] > 0.5
    live_detections = _messages(tmp_path / "live" / "bag", "/detection/detections")
    offline_detections = _messages(tmp_path / "offline" / "bag", "/detections")
    for (_, got), (_, want) in zip(live_detections, offline_detections, strict=True):
        boxes, class_ids, scores = bag_io.detections_from_message(got)
        want_boxes, want_names, want_scores = bag_io.detections_from_message(want)
        coco_names = load_model_spec(spec).labels or ()
        # the node publishes the class index (class_id_format: index); the offline bag carries names
        assert got.header == want.header and [coco_names[int(i)] for i in class_ids] == want_names
        np.testing.assert_allclose(boxes, want_boxes, atol=1e-3)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
