"""make-bag and bag reading/writing with rosbags: round trips in mcap and sqlite3."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from trt_perception.cli import make_bag as make_bag_cli
from trt_perception.evaluation import bag_io
from trt_perception.evaluation.ground_truth import GroundTruthError, StampMatcher, read_coco
from trt_perception.evaluation.make_bag import make_bag

IMAGES = Path(__file__).parent / "fixtures" / "images"
SAMPLES = [IMAGES / "coffee.png", IMAGES / "quokka.jpg"]


def read_all(bag: Path, topics: list[str]) -> list[tuple[bag_io.BagMessage, object]]:
    reader = bag_io.open_reader(bag)
    try:
        store = bag_io.typestore(bag_io.bag_distro(reader))
        return [(m, bag_io.deserialize(m, store)) for m in bag_io.iter_messages(reader, topics)]
    finally:
        reader.close()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_images_and_masks_round_trip(tmp_path: Path, storage: str) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    coffee = cv2.imread(str(SAMPLES[0]))
    mask = (coffee[:, :, 2] > 128).astype(np.uint8)  # any class-index image of the right size
    cv2.imwrite(str(labels / "coffee.png"), mask)
    bag = tmp_path / "bag"

    summary = make_bag(SAMPLES, bag, "/cam/image", 4.0, storage=storage, labels_dir=labels,
                       gt_topic="/gt", frame_id="cam_optical", start_ns=10**18)

    assert (summary.frames, summary.ground_truth, summary.frames_without_ground_truth) == (2, 1, ["quokka.jpg"])
    messages = read_all(bag, ["/cam/image", "/gt"])
    assert [(m.topic, m.log_time) for m, _ in messages] == [
        ("/cam/image", 10**18), ("/gt", 10**18), ("/cam/image", 10**18 + 250_000_000)
    ]
    images = [(m, msg) for m, msg in messages if m.topic == "/cam/image"]
    for (message, msg), path in zip(images, SAMPLES, strict=True):
        decoded = bag_io.image_from_message(msg, message.msgtype)
        assert msg.encoding == "rgb8" and msg.header.frame_id == "cam_optical"
        assert bag_io.stamp_ns(msg.header) == message.log_time
        np.testing.assert_array_equal(decoded.pixels, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    gt_message, gt = messages[1]
    assert gt.encoding == "mono8"
    np.testing.assert_array_equal(bag_io.image_from_message(gt, gt_message.msgtype).pixels[:, :, 0], mask)


def test_sixteen_bit_masks_and_images_stay_sixteen_bit(tmp_path: Path) -> None:
    depth = (np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50)  # values up to 59950
    cv2.imwrite(str(tmp_path / "depth.png"), depth)
    labels = tmp_path / "labels"
    labels.mkdir()
    mask = (depth // 1000).astype(np.uint16) + 300  # class indices above 255
    cv2.imwrite(str(labels / "depth.png"), mask)

    make_bag([tmp_path / "depth.png"], tmp_path / "bag", "/depth", 1.0, encoding="mono16", labels_dir=labels)

    ((image_message, image), (mask_message, gt)) = read_all(tmp_path / "bag", ["/depth", "/ground_truth"])
    assert (image.encoding, gt.encoding) == ("mono16", "mono16")
    np.testing.assert_array_equal(bag_io.image_from_message(image, image_message.msgtype).pixels[:, :, 0], depth)
    np.testing.assert_array_equal(bag_io.image_from_message(gt, mask_message.msgtype).pixels[:, :, 0], mask)
    with pytest.raises(GroundTruthError, match="not a single-channel 16-bit image"):
        make_bag([SAMPLES[0]], tmp_path / "b2", "/cam", 1.0, encoding="mono16")
    assert not (tmp_path / "b2").exists()  # no half-written bag left behind


def test_jpeg_files_are_stored_without_recompression(tmp_path: Path) -> None:
    make_bag(SAMPLES, tmp_path / "bag", "/cam/compressed", 10.0, encoding="jpeg")
    (m1, coffee), (m2, quokka) = read_all(tmp_path / "bag", ["/cam/compressed"])
    assert m1.msgtype == bag_io.COMPRESSED_IMAGE_TYPE and coffee.format == "jpeg"
    assert bytes(quokka.data) == SAMPLES[1].read_bytes()
    decoded = bag_io.image_from_message(coffee, m1.msgtype)
    assert decoded.pixels.shape == (400, 600, 3)  # png re-encoded as jpeg: lossy, size kept


def test_coco_boxes_become_detection_arrays(tmp_path: Path) -> None:
    coco = tmp_path / "gt.json"
    coco.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "quokka.jpg", "width": 960, "height": 643}],
        "categories": [{"id": 3, "name": "animal"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [148, 50, 402, 592], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 1},
        ],
    }))
    quokka = cv2.imread(str(SAMPLES[1]))
    assert quokka.shape[:2] == (643, 960)

    summary = make_bag([SAMPLES[1]], tmp_path / "bag", "/cam", 1.0, storage="sqlite3", coco=coco)

    assert summary.crowd_boxes_dropped == 1
    ((_, image), (_, detections)) = read_all(tmp_path / "bag", ["/cam", "/ground_truth"])
    assert detections.header.stamp == image.header.stamp
    boxes, names, scores = bag_io.detections_from_message(detections)
    np.testing.assert_allclose(boxes, [[148, 50, 550, 642]])
    assert (names, scores) == (["animal"], [1.0])
    box = detections.detections[0].bbox
    assert (box.center.position.x, box.center.position.y, box.size_x, box.size_y) == (349, 346, 402, 592)


@pytest.mark.parametrize("distro", ["humble", "kilted"])
def test_bags_with_other_distros_type_definitions(tmp_path: Path, distro: str) -> None:
    make_bag([SAMPLES[0]], tmp_path / "bag", "/cam", 1.0, distro=distro)
    reader = bag_io.open_reader(tmp_path / "bag")
    try:
        (connection,) = reader.connections
        assert "uint32 height" in connection.msgdef.data  # the definition travels with the bag
        ((message, msg),) = [(m, bag_io.deserialize(m, bag_io.typestore(distro))) for m in bag_io.iter_messages(reader, ["/cam"])]
    finally:
        reader.close()
    assert bag_io.image_from_message(msg, message.msgtype).pixels.shape == (400, 600, 3)


def test_unknown_topic_lists_the_bag_topics(tmp_path: Path) -> None:
    make_bag([SAMPLES[0]], tmp_path / "bag", "/cam", 1.0)
    reader = bag_io.open_reader(tmp_path / "bag")
    with pytest.raises(bag_io.BagError, match=r"'/camera' is not in bag .*available topics: /cam \(sensor_msgs/msg/Image, 1 msgs\)"):
        bag_io.require_topic(reader, "/camera", bag_io.IMAGE_TYPES)
    with pytest.raises(bag_io.BagError, match="carries sensor_msgs/msg/Image, expected"):
        bag_io.require_topic(reader, "/cam", [bag_io.DETECTIONS_TYPE])


def test_truncated_message_is_a_clear_error(tmp_path: Path) -> None:
    make_bag([SAMPLES[0]], tmp_path / "bag", "/cam", 1.0)
    ((message, _),) = read_all(tmp_path / "bag", ["/cam"])
    cut = bag_io.BagMessage(message.topic, message.msgtype, message.log_time, message.data[:40])
    with pytest.raises(bag_io.BagError, match="corrupt sensor_msgs/msg/Image message on /cam"):
        bag_io.deserialize(cut, bag_io.typestore())


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(bag_io.BagError, match="does not exist"):
        bag_io.open_reader(tmp_path / "nothing")
    (tmp_path / "bag").mkdir()
    with pytest.raises(bag_io.BagError, match="exists already"):
        make_bag([SAMPLES[0]], tmp_path / "bag", "/cam", 1.0)
    colour = tmp_path / "colour"
    colour.mkdir()
    cv2.imwrite(str(colour / "coffee.png"), cv2.imread(str(SAMPLES[0])))
    with pytest.raises(GroundTruthError, match="must be single-channel"):
        make_bag([SAMPLES[0]], tmp_path / "b2", "/cam", 1.0, labels_dir=colour)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(GroundTruthError, match="not a valid COCO"):
        read_coco(bad)
    # nested deeper than Python's recursion limit: json and PyYAML recurse, one line each all the same
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    with pytest.raises(GroundTruthError, match="not a valid COCO detection file: RecursionError"):
        read_coco(deep)
    deep_bag = tmp_path / "deep_bag"
    deep_bag.mkdir()
    (deep_bag / "metadata.yaml").write_text("[" * 50_000)
    with pytest.raises(bag_io.BagError, match="cannot open bag .*deep_bag: maximum recursion depth"):
        bag_io.open_reader(deep_bag)


def test_cli_prints_summary_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    make_bag_cli.add_arguments(parser)
    args = parser.parse_args(["--images", str(IMAGES / "coffee.png"), "--topic", "/cam",
                              "--out", str(tmp_path / "bag"), "--storage", "sqlite3", "--start-time", "5"])
    assert make_bag_cli.run(args) == 0
    assert "wrote 1 frames" in capsys.readouterr().out
    ((message, msg),) = read_all(tmp_path / "bag", ["/cam"])
    assert message.log_time == 5 * 10**9 and msg.header.stamp.sec == 5
    assert make_bag_cli.run(args) == 1  # exists now
    assert "exists already" in capsys.readouterr().err


def test_stamp_matcher_pairs_in_any_order_and_counts_leftovers() -> None:
    matcher: StampMatcher[str] = StampMatcher(max_pending=2)
    assert matcher.add_frame(1, "f1") is None
    assert matcher.add_truth(2, "t2") is None  # type: ignore[arg-type]
    assert matcher.add_truth(1, "t1") == ("f1", "t1")  # type: ignore[arg-type]
    assert matcher.add_frame(2, "f2") == ("f2", "t2")
    for stamp in (3, 4, 5):  # queue of 2: frame 3 gives up
        matcher.add_frame(stamp, f"f{stamp}")
    assert matcher.add_truth(3, "t3") is None  # type: ignore[arg-type]
    assert matcher.add_truth(5, "t5") == ("f5", "t5")  # type: ignore[arg-type]
    matcher.finish()
    assert (matcher.frames_without_truth, matcher.truths_without_frame) == (2, 1)


def decoders_refusing(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """cv2.imread and cv2.imdecode fail the test when asked to decode ``data`` (whatever its file name)."""
    real_imread, real_imdecode = cv2.imread, cv2.imdecode

    def imread(path: str, *args: object) -> object:
        assert Path(path).read_bytes() != data, f"{path} was decoded"
        return real_imread(path, *args)

    def imdecode(buffer: np.ndarray, *args: object) -> object:
        assert bytes(memoryview(buffer)) != data, "the oversized image was decoded"
        return real_imdecode(buffer, *args)

    monkeypatch.setattr(cv2, "imread", imread)
    monkeypatch.setattr(cv2, "imdecode", imdecode)


@pytest.mark.parametrize("name", ["bomb.bmp", "bomb.webp", "bomb.jpg", "bomb.png"])
def test_max_pixels_is_checked_from_the_header_whatever_the_file_is_named(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """imread picks its decoder by content: a 4000x4000 png (16 MB of pixels in 16 KB) named anything
    is refused from its header, as an image and as a mask, and never decoded."""
    ok, encoded = cv2.imencode(".png", np.zeros((4000, 4000), np.uint8))
    bomb = tmp_path / name
    bomb.write_bytes(encoded.tobytes())
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "coffee.png").write_bytes(encoded.tobytes())
    decoders_refusing(encoded.tobytes(), monkeypatch)
    for encoding in ("rgb8", "jpeg"):
        with pytest.raises(GroundTruthError, match=r"4000x4000 = 16000000 pixels, more than max_pixels 1000000"):
            make_bag([bomb], tmp_path / "bag", "/cam", 1.0, encoding=encoding, max_pixels=1_000_000)
    with pytest.raises(GroundTruthError, match=r"labels.coffee.png is 4000x4000 = 16000000 pixels, more than max_pixels 1000000"):
        make_bag([SAMPLES[0]], tmp_path / "bag", "/cam", 1.0, labels_dir=labels, max_pixels=1_000_000)
    assert not (tmp_path / "bag").exists()


def test_bmp_pgm_tiff_and_webp_sizes_come_from_their_headers_and_other_formats_need_no_limit(tmp_path: Path) -> None:
    pixels = cv2.imread(str(SAMPLES[0]))  # 600x400
    files = {"c.bmp": pixels, "c.pgm": pixels[:, :, 0], "c.tif": pixels, "c.webp": pixels, "c.ras": pixels}
    for name, image in files.items():
        cv2.imwrite(str(tmp_path / name), image)
    cv2.imwrite(str(tmp_path / "lossless.webp"), pixels, [cv2.IMWRITE_WEBP_QUALITY, 101])
    for name in ("c.bmp", "c.pgm", "c.tif", "c.webp", "lossless.webp"):
        with pytest.raises(GroundTruthError, match=r"600x400 = 240000 pixels, more than max_pixels 239999"):
            make_bag([tmp_path / name], tmp_path / "bag", "/cam", 1.0, max_pixels=239_999)
        make_bag([tmp_path / name], tmp_path / name.replace(".", "_"), "/cam", 1.0, max_pixels=240_000)
    # Sun raster: OpenCV reads it, its size is not read here: refused under a limit, read without one
    with pytest.raises(GroundTruthError, match=r"c.ras: the size of this image format cannot be read before decoding"):
        make_bag([tmp_path / "c.ras"], tmp_path / "bag", "/cam", 1.0)
    make_bag([tmp_path / "c.ras"], tmp_path / "ras", "/cam", 1.0, max_pixels=0)
    ((_, message),) = read_all(tmp_path / "ras", ["/cam"])
    assert (message.width, message.height) == (600, 400)


def test_png_named_jpg_is_stored_as_jpeg(tmp_path: Path) -> None:
    """A png file named .jpg is read by its content: re-encoded for a jpeg bag, not refused as a corrupt jpeg."""
    misnamed = tmp_path / "coffee.jpg"
    misnamed.write_bytes(SAMPLES[0].read_bytes())
    make_bag([misnamed], tmp_path / "bag", "/cam", 1.0, encoding="jpeg")
    ((_, message),) = read_all(tmp_path / "bag", ["/cam"])
    assert message.format == "jpeg" and bytes(message.data[:3]) == b"\xff\xd8\xff"
