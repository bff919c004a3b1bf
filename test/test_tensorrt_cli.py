"""``trt-perception build`` and ``trt-perception compare`` with the TensorRT test double."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tensorrt_double import install, unpack_plan

from trt_perception.cli.compare import label_agreement, match_detections
from trt_perception.cli.main import main
from trt_perception.results import Detections

IMAGES = Path(__file__).parent / "fixtures" / "images"


def test_build_only_provisions_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, "10.3.0")
    assert main(["build", "selfie_segmentation", "ppocrv4_det", "--cache-dir", str(tmp_path), "--build-only"]) == 0
    out = capsys.readouterr().out
    engines = sorted(tmp_path.glob("*.engine"))
    assert [path.name.split("-")[0] for path in engines] == ["ppocrv4_det", "selfie_segmentation"]
    assert all(path.with_name(path.name + ".json").is_file() for path in engines)
    assert "loads and runs" not in out and str(engines[0]) in out
    assert main(["build", "ppocrv4_det", "--cache-dir", str(tmp_path)]) == 0  # current: checked, not rebuilt
    assert "ppocrv4_det: loads and runs" in capsys.readouterr().out
    assert sorted(tmp_path.glob("*.engine")) == engines


def test_build_to_a_file_with_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, "10.3.0")
    output = tmp_path / "ppocr.engine"
    argv = [
        "build",
        "ppocrv4_det",
        "-o",
        str(output),
        "--precision",
        "fp16",
        "--workspace-mib",
        "256",
        "--min-shape",
        "x:1x3x32x32",
        "--opt-shape",
        "x:1x3x640x640",
        "--max-shape",
        "x:1x3x960x960",
    ]
    assert main(argv) == 0
    header = unpack_plan(output.read_bytes())[0]
    assert header["profile"]["x"] == [[1, 3, 32, 32], [1, 3, 640, 640], [1, 3, 960, 960]]
    assert header["flags"] == ["FP16"] and header["workspace"] == 256 << 20
    assert json.loads((tmp_path / "ppocr.engine.json").read_text())["key"]["precision"] == "fp16"
    assert "[1, 1, 640, 640]" in capsys.readouterr().out  # the check ran at the opt shape


@pytest.mark.parametrize(
    ("version", "extra", "message"),
    [
        ("11.4.0", ["--precision", "fp16"], "strongly typed"),
        ("10.3.0", ["--min-shape", "x:1x3x32x32"], "'x': --opt-shape missing"),
        ("10.3.0", ["--min-shape", "x=1x3"], "expected NAME:DxDx"),
    ],
)
def test_build_errors_are_reported(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    version: str,
    extra: list[str],
    message: str,
) -> None:
    install(monkeypatch, version)
    assert main(["build", "ppocrv4_det", "--cache-dir", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_compare_segmentation_and_detection(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, "10.3.0")
    monkeypatch.setenv("TRT_PERCEPTION_ENGINE_CACHE", str(tmp_path / "cache"))
    report = tmp_path / "report.json"
    assert (
        main(
            [
                "compare",
                str(IMAGES / "page.png"),
                "--model-spec",
                "ppocrv4_det",
                "--json",
                str(report),
                "--min-agreement",
                "99.9",
            ]
        )
        == 0
    )
    assert "labels agree 100.000 %" in capsys.readouterr().out
    record = json.loads(report.read_text())["images"][0]
    assert record["label_agreement_percent"] == 100.0 and record["max_output_delta"] == {"sigmoid_0.tmp_0": 0.0}
    argv = ["compare", str(IMAGES / "motorcycle_left.png"), "--model-spec", "centernet_mobilenetv3_coco"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(only onnxruntime 0, only tensorrt 0), mean IoU 1.0000" in out
    assert "boxes matched 0" not in out
    assert main([*argv, "--min-agreement", "100.1"]) == 1  # nothing can reach it: the gate fails
    # no box on either side: nothing matched, so the means are undefined; the report stays strict JSON
    nothing = tmp_path / "nothing.json"
    assert main(["compare", str(IMAGES / "page.png"), "--model-spec", "centernet_mobilenetv3_coco", "--json",
                 str(nothing)]) == 0
    text = nothing.read_text()
    detections = json.loads(text, parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))["images"][0]["detections"]
    assert detections["matched"] == 0 and detections["matched_percent"] == 100.0
    assert detections["mean_iou"] is None and detections["max_score_delta"] is None


def test_detection_matching_counts_ious_and_score_deltas() -> None:
    reference = Detections(
        np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]]), np.array([0.9, 0.5, 0.4]), np.array([1, 2, 1])
    )
    candidate = Detections(
        np.array([[0, 0, 10, 12], [20, 20, 30, 30], [51, 50, 61, 60]]), np.array([0.8, 0.5, 0.45]), np.array([1, 3, 1])
    )
    agreement = match_detections(reference, candidate, iou_threshold=0.5)
    assert (agreement.matched, agreement.only_reference, agreement.only_candidate) == (2, 1, 1)
    # IoUs 100/120 and 90/110; score deltas 0.1 and 0.05
    assert agreement.mean_iou == pytest.approx((100 / 120 + 90 / 110) / 2)
    assert agreement.mean_score_delta == pytest.approx(0.075, abs=1e-6)
    assert agreement.max_score_delta == pytest.approx(0.1, abs=1e-6)
    assert agreement.matched_percent == pytest.approx(50.0)
    strict = match_detections(reference, candidate, iou_threshold=0.84)
    assert strict.matched == 0 and strict.matched_percent == 0.0
    assert match_detections(Detections.empty(), Detections.empty(), 0.5).matched_percent == 100.0


def test_label_agreement_percent() -> None:
    reference = np.zeros((4, 5), np.uint8)
    candidate = reference.copy()
    candidate[0, :3] = 1
    assert label_agreement(reference, candidate) == pytest.approx(100 * 17 / 20)
    with pytest.raises(ValueError, match="differ in shape"):
        label_agreement(reference, candidate[:3])
