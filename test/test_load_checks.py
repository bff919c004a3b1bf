"""Spec problems found when the pipeline is built, not per frame; specs without labels; scores that are not
probabilities. Real bundled models (CenterNet, selfie) with their specs edited the way a user would."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import yaml

from trt_perception.cli.main import main
from trt_perception.errors import InferenceError, SpecError
from trt_perception.pipeline import Pipeline
from trt_perception.spec import bundled_spec_dirs

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "test" / "fixtures" / "images"
MODELS = REPO / "test" / "fixtures" / "models"


def edited_spec(folder: Path, bundled: str, model: str, drop: tuple[str, ...] = (), **decoder_changes) -> Path:
    """A copy of a bundled spec with its model path made absolute, keys dropped and decoder keys changed."""
    folder_of_bundled = bundled_spec_dirs()[0]
    data = yaml.safe_load((folder_of_bundled / f"{bundled}.yaml").read_text())
    data["model"] = str(MODELS / model)
    if isinstance(data.get("labels"), str):
        data["labels"] = str((folder_of_bundled / data["labels"]).resolve())
    for key in drop:
        data.pop(key, None)
    data["decoder"].update(decoder_changes)
    path = folder / f"{bundled}_edited.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_wrong_decoder_tensor_is_named_with_the_spec_file_and_the_models_outputs(tmp_path):
    spec = edited_spec(tmp_path, "centernet_mobilenetv3_coco", "centernet_mobilenetv3_coco.onnx", output="detections")
    with pytest.raises(SpecError) as error:
        Pipeline.from_spec(spec, intra_op_threads=1)
    message = str(error.value)
    assert message.startswith(f"{spec}: decoder.output: the model has no output 'detections'; its outputs: ")
    assert "tower_0/detections [1,100,6]" in message


def centernet_scores_from_column(folder: Path, column: int) -> Path:
    """The CenterNet spec with its score read from ``column`` of the detection rows."""
    columns = {"x1": 0, "y1": 1, "x2": 2, "y2": 3, "score": column}
    return edited_spec(folder, "centernet_mobilenetv3_coco", "centernet_mobilenetv3_coco.onnx", columns=columns)


def test_a_rows_column_beyond_the_tensor_is_found_at_load(tmp_path):
    spec = centernet_scores_from_column(tmp_path, 6)
    with pytest.raises(
        SpecError,
        match=r"decoder.output: the model output 'tower_0/detections' has shape \[1,100,6\]; "
        r"expected \[B,N,K\] rows with K > 6",
    ):
        Pipeline.from_spec(spec, intra_op_threads=1)


def test_scores_that_are_not_probabilities_are_an_error_not_detections(tmp_path):
    """The decoder reads box coordinates (column 2, x2 in pixels) as scores: an error, not detections."""
    spec = centernet_scores_from_column(tmp_path, 2)
    pipeline = Pipeline.from_spec(spec, intra_op_threads=1)
    with pytest.raises(
        InferenceError,
        match=r"'tower_0/detections' gives scores .* must be probabilities in \[0, 1\]: "
        "set decoder.score_activation",
    ):
        pipeline.run(cv2.imread(str(IMAGES / "coffee.png")), "BGR")


@pytest.mark.parametrize(
    ("bundled", "model", "drop"),
    [
        ("selfie_segmentation", "selfie_segmentation.onnx", ("labels", "palette")),
        ("centernet_mobilenetv3_coco", "centernet_mobilenetv3_coco.onnx", ("labels",)),
    ],
)
def test_a_spec_without_labels_runs_in_infer_with_indices_as_class_names(tmp_path, capsys, bundled, model, drop):
    spec = edited_spec(tmp_path, bundled, model, drop)
    out = tmp_path / "out"
    assert (
        main(["infer", "--model-spec", str(spec), str(IMAGES / "coffee.png"), "--output", str(out), "--no-progress"])
        == 0
    )
    assert "1 images processed, 0 failed" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    image = results["images"][0]
    names = [d["class"] for d in image["detections"]] if "detections" in image else list(image["class_pixels"])
    assert names and all(name.isdigit() for name in names)
    if bundled.startswith("centernet"):
        assert "41" in names  # COCO-80 index of "cup" (coco80_labels.txt line 42)
