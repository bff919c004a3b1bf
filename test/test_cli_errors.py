"""Every user mistake on the command line ends in one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trt_perception.cli.main import main

IMAGES = Path(__file__).parent / "fixtures" / "images"
REPO = Path(__file__).resolve().parent.parent


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``trt-perception`` in a process of its own (as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "trt_perception.cli.main", *arguments],
                          capture_output=True, text=True, timeout=120)


def infer_arguments(tmp_path: Path, *extra: str) -> list[str]:
    return ["infer", "--model-spec", "selfie_segmentation", str(IMAGES / "page.png"), "--output",
            str(tmp_path / "out"), "--no-progress", *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--alpha", "5"], "--alpha: must be between 0 and 1, got '5'"),
        (["--alpha", "nan"], "--alpha: must be a finite number, got 'nan'"),
        (["--threads", "-1"], "--threads: must be 0 or more, got '-1'"),
        (["--max-pixels", "many"], "--max-pixels: not an integer: 'many'"),
    ],
)
def test_infer_option_mistakes_are_one_line_and_exit_2(tmp_path: Path, extra: list[str], message: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(infer_arguments(tmp_path, *extra))
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ("selfie_segmentation", ["--score-threshold", "0.9"], "--score-threshold applies to detection models only"),
        ("centernet_mobilenetv3_coco", ["--alpha", "0.9"], "--alpha applies to segmentation models only"),
    ],
)
def test_infer_option_for_the_other_task_is_refused(tmp_path: Path, spec: str, extra: list[str], message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["infer", "--model-spec", spec, str(IMAGES / "page.png"), "--output", str(tmp_path / "out"), *extra]
    assert main(arguments) == 2
    assert capsys.readouterr().err.strip() == f"trt-perception infer: {message}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--node-output", "/segmentation/labels"], "--node-output: only with --live"),
        (["--wait-for-node", "1", "--answer-timeout", "2"], "--wait-for-node, --answer-timeout: only with --live"),
        (["--workers", "2"], "--workers: only with several bags (a fleet job on Ray)"),
        (["--workers", "0", "--cpus-per-task", "0"], "--workers, --cpus-per-task: only with several bags (a fleet job on Ray)"),
        (["--force"], "--force: only with several bags (a fleet job on Ray)"),
        (["--eval-score-threshold", "0.2", "--detections-topic", "/d"],
         "--detections-topic, --eval-score-threshold: not for a segmentation model"),
    ],
)
def test_bag_eval_options_of_another_mode_are_refused(tmp_path: Path, extra: list[str], message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # an offline run of one bag would ignore them: e.g. --node-output without --live evaluates the spec, not the node
    bag = tmp_path / "bag"
    assert main(["make-bag", "--images", str(IMAGES / "page.png"), "--topic", "/cam", "--out", str(bag)]) == 0
    capsys.readouterr()
    arguments = ["bag-eval", "--bag", str(bag), "--model-spec", "selfie_segmentation", "--image-topic", "/cam",
                 "--out", str(tmp_path / "eval"), "--no-progress", *extra]
    assert main(arguments) == 1
    assert capsys.readouterr().err.strip() == f"bag-eval: {message}"
    assert not (tmp_path / "eval").exists()


def test_bag_eval_segmentation_options_with_a_detection_model_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the evaluation of boxes has no ignore index and writes no label images: they were silently dropped
    bag = tmp_path / "bag"
    assert main(["make-bag", "--images", str(IMAGES / "dog.jpg"), "--topic", "/cam", "--out", str(bag)]) == 0
    capsys.readouterr()
    arguments = ["bag-eval", "--bag", str(bag), "--model-spec", "centernet_mobilenetv3_coco", "--image-topic", "/cam",
                 "--out", str(tmp_path / "eval"), "--no-progress", "--ignore-index", "none", "--labels-topic", "/l"]
    assert main(arguments) == 1
    assert capsys.readouterr().err.strip() == "bag-eval: --ignore-index, --labels-topic: not for a detection model"
    assert not (tmp_path / "eval").exists()
    # the detection options are taken: the output bag holds the detections on the topic given
    assert main([*arguments[:-4], "--detections-topic", "/dog/detections", "--eval-score-threshold", "0.3"]) == 0
    metadata = (tmp_path / "eval" / "bag" / "metadata.yaml").read_text()
    topics = {line.split("name:")[1].strip() for line in metadata.splitlines() if line.strip().startswith("name:")}
    assert "/dog/detections" in topics and "/detections" not in topics, topics


def test_infer_output_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("not a folder")
    result = run_cli(*infer_arguments(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"trt-perception infer: --output {tmp_path / 'out'} exists and is not a folder"]


def test_infer_never_reads_its_own_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "page.png").write_bytes((IMAGES / "page.png").read_bytes())
    arguments = ["infer", "--model-spec", "selfie_segmentation", str(folder), "--output", str(folder / "out"),
                 "--no-progress"]
    assert main(arguments) == 0
    capsys.readouterr()
    assert main(arguments) == 0  # second run: the first run's outputs lie inside the input folder
    assert f"left out 2 images inside the output folder {folder / 'out'}" in capsys.readouterr().err
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["page_labels.png", "page_overlay.png", "results.json"]
    assert '"processed": 1' in (folder / "out" / "results.json").read_text()


def test_infer_skips_an_image_over_max_pixels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(infer_arguments(tmp_path, "--max-pixels", "1000")) == 1
    assert "more than max_pixels 1000" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: caf\u00e9\n".encode("latin-1"), "not UTF-8 text (byte 9: invalid continuation byte)"),
        (b"a: " + b"[" * 100_000 + b"\n", "not valid YAML: lists and mappings nested more than 32 deep"),
    ],
)
def test_infer_with_an_unreadable_spec_is_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_bytes(content)
    result = run_cli("infer", "--model-spec", str(spec), str(IMAGES / "page.png"), "--output", str(tmp_path / "out"),
                     "--no-progress")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(spec) in lines[0] and message in lines[0], result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rate", "nan"], "--rate: must be a finite number, got 'nan'"),
        (["--rate", "inf"], "--rate: must be a finite number, got 'inf'"),
        (["--rate", "0"], "--rate: must be above 0, got '0'"),
        (["--start-time", "1e300"], "--start-time: must be between 0 and 2147483647 (a ROS stamp), got '1e300'"),
        (["--start-time", "-5"], "--start-time: must be between 0 and 2147483647"),
        (["--topic", "/camera/2d image"], "--topic: '/camera/2d image' is not a valid ROS topic name"),
        (["--gt-topic", "gt//truth"], "--gt-topic: 'gt//truth' is not a valid ROS topic name"),
    ],
)
def test_make_bag_option_mistakes_are_one_line_and_exit_2(tmp_path: Path, extra: list[str], message: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["make-bag", "--images", str(IMAGES / "page.png"), "--topic", "/camera/image", "--out",
                 str(tmp_path / "bag")]
    with pytest.raises(SystemExit) as stopped:
        main(arguments + extra)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bag").exists()


def test_make_bag_refuses_an_image_over_max_pixels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["make-bag", "--images", str(IMAGES / "page.png"), "--topic", "/camera/image", "--out",
                 str(tmp_path / "bag"), "--max-pixels", "1000"])
    assert code == 1
    assert "more than max_pixels 1000" in capsys.readouterr().err
    assert not (tmp_path / "bag").exists()


def test_compare_iou_outside_zero_to_one_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["compare", "--model-spec", "selfie_segmentation", str(IMAGES / "page.png"), "--iou", "1.5"])
    assert stopped.value.code == 2
    assert "--iou: must be between 0 and 1, got '1.5'" in capsys.readouterr().err


def test_infer_with_a_network_size_mistyped_by_two_digits_is_one_line(tmp_path: Path) -> None:
    """PP-OCR's spec (a model of dynamic size) with input.size [100000, 100000]: each frame asked numpy for
    112 GiB, a MemoryError traceback; now the spec is refused in one line before the model is loaded."""
    bundled = (REPO / "config" / "models" / "ppocrv4_det.yaml").read_text()
    rule = "size: {short_side: 736, multiple_of: 32, rounding: nearest, upscale_only: true, max_long_side: 2000}"
    assert rule in bundled
    spec = tmp_path / "mistyped.yaml"
    spec.write_text(bundled.replace(rule, "size: [100000, 100000]").replace(
        "model: ../../test/fixtures/models/ppocrv4_det.onnx", f"model: {REPO / 'test' / 'fixtures' / 'models' / 'ppocrv4_det.onnx'}"))
    result = run_cli("infer", "--model-spec", str(spec), str(IMAGES / "page.png"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr == (f"trt-perception infer: error: {spec}: input.size[0]: 100000 pixels; a network input "
                             "side is at most 16384\n")
