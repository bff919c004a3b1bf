"""``trt-perception infer`` end to end on real images: files written, results file, summary, errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from cupy_stand_ins import fresh_cupy_check, no_cupy  # noqa: F401 (fixtures)
from onnx_builders import rows_detector_spec

from trt_perception.cli.main import main

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "test" / "fixtures" / "images"


def test_segmentation_on_a_folder_writes_labels_overlays_and_json(tmp_path):
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(IMAGES / "astronaut.png", folder)
    shutil.copy(IMAGES / "quokka.jpg", folder / "nested")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    # through `python -m`, as users run it before the console script is installed
    completed = subprocess.run(
        [sys.executable, "-m", "trt_perception.cli.main", "infer", "--model-spec", "selfie_segmentation",
         str(folder), "--output", str(out), "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "2 images processed, 0 failed" in completed.stdout
    for stage in ("preprocess", "inference", "postprocess"):
        assert stage in completed.stdout
    assert "p90" in completed.stdout
    assert "100%" in completed.stderr, "a progress bar is shown for folders"

    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "selfie_segmentation" and results["processed"] == 2
    assert set(results["timings_ms"]) == {"preprocess", "inference", "postprocess"}
    assert set(results["timings_ms"]["inference"]) == {"mean", "p50", "p90"}
    records = {Path(record["image"]).name: record for record in results["images"]}
    assert set(records) == {"astronaut.png", "quokka.jpg"}
    for name, record in records.items():
        source = cv2.imread(str(IMAGES / name))
        labels = cv2.imread(str(out / record["labels"]), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(out / record["overlay"]), cv2.IMREAD_COLOR)
        assert labels.shape == source.shape[:2] and labels.dtype == np.uint8
        assert overlay.shape == source.shape
        counts = {"background": int(np.count_nonzero(labels == 0)), "person": int(np.count_nonzero(labels == 1))}
        assert record["class_pixels"] == {k: v for k, v in counts.items() if v}
        person = labels == 1
        if person.any():  # the overlay is tinted where the person is, unchanged in colour elsewhere
            assert not np.array_equal(overlay[person], source[person])
    assert records["astronaut.png"]["class_pixels"]["person"] > 0.3 * 512 * 512


def test_detection_on_files_writes_annotated_images_and_tsv(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["infer", "--model-spec", "centernet_mobilenetv3_coco", str(IMAGES / "coffee.png"),
                 str(IMAGES / "motorcycle_left.png"), "--output", str(out), "--format", "tsv",
                 "--score-threshold", "0.25", "--threads", "2", "--no-progress"])
    assert code == 0
    assert "2 images processed" in capsys.readouterr().out
    with (out / "results.tsv").open() as stream:
        rows = list(csv.DictReader(stream, delimiter="\t"))
    assert {"cup", "motorcycle"} <= {row["class"] for row in rows}
    for row in rows:
        assert float(row["score"]) >= 0.25
        assert float(row["x1"]) <= float(row["x2"]) and float(row["y1"]) <= float(row["y2"])
    cup = next(row for row in rows if row["class"] == "cup")
    annotated = cv2.imread(str(out / "coffee_detections.png"))
    source = cv2.imread(str(IMAGES / "coffee.png"))
    assert annotated.shape == source.shape
    x1, y1 = round(float(cup["x1"])), round(float(cup["y1"]))
    y2 = round(float(cup["y2"]))
    changed = np.any(annotated != source, axis=2)
    middle = (y1 + y2) // 2
    assert changed[middle, max(x1 - 2, 0) : x1 + 3].any(), "the box's left edge is drawn where the cup is"
    assert (out / "motorcycle_left_detections.png").is_file()


def test_same_names_in_two_folders_do_not_overwrite_each_other(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(IMAGES / "page.png", tmp_path / folder / "frame.png")
    out = tmp_path / "out"
    assert main(["infer", "--model-spec", "selfie_segmentation", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--output", str(out), "--no-progress"]) == 0
    assert (out / "frame_labels.png").is_file() and (out / "frame_2_labels.png").is_file()


def test_unreadable_image_is_reported_and_the_rest_processed(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = tmp_path / "out"
    code = main(["infer", "--model-spec", "selfie_segmentation", str(broken), str(IMAGES / "astronaut.png"),
                 "--output", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"skipped {broken}" in captured.err and "corrupt" in captured.err
    assert "1 images processed, 1 failed" in captured.out
    assert (out / "astronaut_labels.png").is_file()


def test_missing_input_and_bad_spec_exit_with_a_message(tmp_path, capsys):
    assert main(["infer", "--model-spec", "selfie_segmentation", str(tmp_path / "absent.png"),
                 "--output", str(tmp_path / "out")]) == 2
    assert f"input not found: {tmp_path / 'absent.png'}" in capsys.readouterr().err
    assert main(["infer", "--model-spec", "no_such_spec", str(IMAGES / "page.png"),
                 "--output", str(tmp_path / "out")]) == 2
    assert "'no_such_spec' is neither a file nor a bundled spec" in capsys.readouterr().err


def test_device_gpu_without_cupy_fails_clearly_and_auto_runs_on_the_cpu(tmp_path, capsys, no_cupy):
    common = ["infer", "--model-spec", "selfie_segmentation", str(IMAGES / "astronaut.png"), "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "gpu"), "--device", "gpu"]) == 2
    assert "needs CuPy, which is not installed" in capsys.readouterr().err
    assert main([*common, "--output", str(tmp_path / "auto"), "--device", "auto"]) == 0
    assert "selfie_segmentation (segmentation, onnxruntime, cpu): 1 images processed" in capsys.readouterr().out
    assert json.loads((tmp_path / "auto" / "results.json").read_text())["device"] == "cpu"


def test_boxes_with_negative_width_or_height_never_reach_the_results(tmp_path, capsys):
    """A spec with the wrong box format decodes some boxes inverted: they are left out before NMS and the
    detection limit, so the best upright box still takes the only slot (max_detections 1)."""
    rows = np.array([[[3.0, 1.0, 1.0, 3.0, 0.9, 0],    # x2 < x1: inverted, the best score
                      [1.0, 3.0, 3.0, 1.0, 0.8, 1],    # y2 < y1: inverted
                      [0.0, 0.0, 2.0, 2.0, 0.7, 1]]], np.float32)
    spec = rows_detector_spec(tmp_path, rows, max_detections=1)
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.zeros((4, 4, 3), np.uint8))
    out = tmp_path / "out"
    assert main(["infer", "--model-spec", str(spec), str(image), "--output", str(out),
                 "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    (found,) = results["images"]
    assert [(d["class"], d["score"], d["box"]) for d in found["detections"]] == [("b", 0.7, [0.0, 0.0, 2.0, 2.0])]
