"""Model spec loading: bundled specs, path resolution, labels, and errors that name the bad key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from trt_perception.errors import SpecError
from trt_perception.spec import DynamicSize, PostAffine, bundled_spec_names, load_model_spec, parse_model_spec

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "test" / "fixtures" / "models"

VALID: dict[str, Any] = {
    "name": "demo",
    "task": "detection",
    "model": "model.onnx",
    "input": {
        "size": [320, 480],
        "layout": "NHWC",
        "normalization": {"type": "mean_std", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    },
    "labels": ["cat", "dog"],
    "decoder": {"type": "rows", "output": "detections"},
    "detection": {"score_threshold": 0.4, "nms_iou": None, "classes": ["dog"]},
}


def write_spec(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def with_change(path: str, value: Any) -> dict[str, Any]:
    """VALID with the dotted key ``path`` set to ``value`` (or removed when value is ...)."""
    data = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return data


def test_bundled_specs_load_by_name_and_point_at_the_fixture_models():
    assert set(bundled_spec_names()) >= {"selfie_segmentation", "centernet_mobilenetv3_coco", "ppocrv4_det"}
    selfie = load_model_spec("selfie_segmentation")
    assert selfie.model == MODELS / "selfie_segmentation.onnx" and selfie.model.is_file()
    assert selfie.input.size == (256, 256) and selfie.input.layout == "NHWC"
    assert selfie.labels == ("background", "person")
    centernet = load_model_spec("centernet_mobilenetv3_coco")
    coco = (MODELS / "coco80_labels.txt").read_text().split("\n")
    assert centernet.labels is not None and len(centernet.labels) == 80
    assert centernet.labels[0] == coco[0] == "person" and centernet.labels[79] == coco[79]
    ocr = load_model_spec("ppocrv4_det")
    assert ocr.input.size == DynamicSize(
        short_side=736, multiple_of=32, max_long_side=2000, rounding="nearest", upscale_only=True
    )
    assert ocr.input.color_order == "BGR" and ocr.input.resize == "fixed_shape"  # RapidOCR stretches


def test_relative_paths_resolve_from_the_spec_folder(tmp_path, monkeypatch):
    (tmp_path / "labels.txt").write_text("cat\ndog\n\n", encoding="utf-8")
    data = with_change("labels", "labels.txt")
    data["engine"] = "engines/model.engine"
    path = write_spec(tmp_path, data)
    monkeypatch.chdir(REPO)  # somewhere else than the spec's folder
    spec = load_model_spec(str(path))
    assert spec.model == tmp_path / "model.onnx"
    assert spec.engine == tmp_path / "engines" / "model.engine"
    assert spec.labels == ("cat", "dog")
    assert spec.source == path
    assert spec.input.normalization.mean == (0.485, 0.456, 0.406)
    assert spec.detection.nms_iou is None and spec.detection.score_threshold == 0.4
    assert spec.detection.classes == ("dog",)
    assert dict(spec.decoder) == {"type": "rows", "output": "detections"}


def test_defaults_fill_missing_optional_keys(tmp_path):
    spec = parse_model_spec(
        {"task": "segmentation", "model": "m.onnx", "input": {"size": [8, 8]}, "decoder": {"type": "labels"}}, tmp_path
    )
    assert spec.name == "model" and spec.backend == "auto" and spec.output_resolution == "source"
    assert spec.input.layout == "NCHW" and spec.input.normalization.type == "unit"
    assert spec.labels is None and spec.num_classes is None
    assert spec.tensorrt.cuda_graph is False


def test_decoder_errors_name_the_spec_file_before_the_model_is_loaded(tmp_path):
    data = with_change("task", "segmentation")
    del data["detection"]
    data["decoder"] = {"type": "binary", "threshold": "high"}  # and model.onnx does not exist
    path = write_spec(tmp_path, data)
    with pytest.raises(SpecError, match=f"^{path}: decoder.threshold: expected a number, got 'high'$"):
        load_model_spec(path)


def test_tensorrt_section(tmp_path):
    spec = parse_model_spec(with_change("tensorrt", {"cuda_graph": True}), tmp_path)
    assert spec.tensorrt.cuda_graph is True
    assert spec.tensorrt.precision == "fp32"
    spec = parse_model_spec(
        with_change("tensorrt", {"precision": "int8", "calibration_images": "calib", "calibration_cache": "c.cache"}),
        tmp_path,
    )
    assert spec.tensorrt.precision == "int8"
    assert (spec.tensorrt.calibration_images, spec.tensorrt.calibration_cache) == (tmp_path / "calib", tmp_path / "c.cache")


def test_reproduction_keys_parse():
    data = with_change("input.size", {"short_side": 736, "multiple_of": 32, "rounding": "nearest", "upscale_only": True})
    data["input"]["sampling"] = "asymmetric"
    data["input"]["normalization"] = {
        "type": "per_image_standardization", "range": "unit", "reciprocal_std_cap": {"factor": 3, "of": "count"},
        "post_affine": {"scale": 0.2, "offset": 0.5, "clip": [0, 1]},
    }
    spec = parse_model_spec(data, REPO)
    assert spec.input.size == DynamicSize(736, 32, None, "nearest", True)
    assert spec.input.sampling == "asymmetric"
    normalization = spec.input.normalization
    assert (normalization.statistics_range, normalization.reciprocal_std_cap) == ("unit", (3.0, "count"))
    assert normalization.post_affine == PostAffine(0.2, 0.5, (0.0, 1.0))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("input.normalization.mean", [0.5, 0.5], "input.normalization.mean: expected 3 numbers, got 2"),
        ("input.normalization.std", [0.2, 0.0, 0.2], "input.normalization.std: every value must be positive"),
        ("input.normalization.type", "zscore", "input.normalization.type: expected one of"),
        ("input.normalization.mean", ..., "input.normalization.mean: required key is missing"),
        ("input.size", [320], "input.size: expected [height, width], got 1 numbers"),
        ("input.size", [320, "480"], "input.size[1]: expected an integer"),
        ("input.size", {"short_side": 0}, "input.size.short_side: must be at least 1"),
        ("input.size", {"short_side": 736, "max_long_side": 100}, "input.size.max_long_side: must be at least"),
        ("input.size", {"short": 736}, "input.size.short_side: required key is missing"),
        ("input.size", ..., "input.size: required key is missing"),
        ("input.layout", "HWC", "input.layout: expected one of NCHW, NHWC, got 'HWC'"),
        ("input.dtype", "int8", "input.dtype: expected one of float32, float16, uint8"),
        ("input.color_order", "RGBA", "input.color_order: expected one of RGB, BGR"),
        ("input.resize", "crop", "input.resize: expected one of"),
        ("input.pad_value", [1, 2], "input.pad_value: expected 3 numbers, got 2"),
        # pad values are pixels: 300 became 44 in a uint8 input, 1e9 inf in a float16 one
        ("input.pad_value", 300, "input.pad_value: must be a pixel value between 0 and 255, got 300"),
        ("input.pad_value", [114, 1e9, 0], "input.pad_value[1]: must be a pixel value between 0 and 255, got 1000000000.0"),
        ("input.pad_value", [-5, 0, 0], "input.pad_value[0]: must be a pixel value between 0 and 255, got -5"),
        ("input.interpolation", "lanczos", "input.interpolation: expected one of"),
        ("input.sampling", "corners", "input.sampling: expected one of half_pixel, align_corners, asymmetric"),
        ("input.size", {"short_side": 736, "rounding": "down"}, "input.size.rounding: expected one of nearest, up"),
        ("input.size", {"short_side": 736, "upscale_only": "yes"}, "input.size.upscale_only: expected true or false"),
        ("input.size", {"short_side": 800, "side_rounding": "round"}, "input.size.side_rounding: expected one of truncate, transformers"),
        ("input.size", {"short_side": 800, "side_rounding": "transformers", "upscale_only": True},
         "input.size.upscale_only: not part of side_rounding transformers"),
        ("input.normalization", {"type": "unit", "post_affine": {"clip": [1, 0]}},
         "input.normalization.post_affine.clip: low must not exceed high"),
        ("input.normalization", {"type": "unit", "post_affine": {"scael": 2}}, "input.normalization.post_affine.scael: unknown key"),
        ("input.normalization", {"type": "per_image_standardization", "reciprocal_std_cap": {"of": "n"}},
         "input.normalization.reciprocal_std_cap.of: expected one of sqrt_count, count"),
        ("input.normalization", {"type": "per_image_standardization", "reciprocal_std_cap": {"factor": 0}},
         "input.normalization.reciprocal_std_cap.factor: must be positive"),
        ("input.normalization", {"type": "unit", "range": "byte"}, "input.normalization.range: unknown key"),
        ("input.colour_order", "RGB", "input.colour_order: unknown key"),
        ("input", ..., "input: required key is missing"),
        ("task", "classification", "task: expected one of segmentation, detection"),
        ("backend", "openvino", "backend: expected one of auto, onnxruntime, tensorrt"),
        ("model", ..., "model: required key is missing"),
        ("decoder", ..., "decoder: required key is missing"),
        ("decoder", {"output": "x"}, "decoder: expected a mapping with a type"),
        ("labels", [], "labels: no labels given"),
        # YAML reads [no, yes] as booleans, [null] as None: they became the names 'False', 'True', 'None'
        ("labels", ["person", False], "labels[1]: expected a class name (non-empty text), got bool False"),
        ("labels", [None, "person"], "labels[0]: expected a class name (non-empty text), got NoneType None"),
        ("labels", [0.5, "person"], "labels[0]: expected a class name (non-empty text), got float 0.5"),
        ("labels", ["cat", " "], "labels[1]: expected a class name (non-empty text), got str ' '"),
        ("labels", "missing_labels.txt", "labels: cannot read labels file"),
        ("labels", "/dev/zero", "labels: labels file /dev/zero is not a regular file"),
        ("palette", [[0, 0, 300]], "palette[0]: expected integers 0..255"),
        ("detection.score_threshold", 1.5, "detection.score_threshold: must be between 0.0 and 1.0"),
        ("detection.max_detections", 0, "detection.max_detections: must be at least 1"),
        # an integer beyond float's range raised OverflowError from math.isfinite, not a SpecError
        pytest.param("detection.score_threshold", 10**400, "detection.score_threshold: expected a number, got int 1000",
                     id="score_threshold-int-beyond-float"),
        pytest.param("decoder", {"type": "db_text", "unclip_ratio": 10**400}, "decoder.unclip_ratio: expected a number, got 1000",
                     id="decoder-number-int-beyond-float"),
        ("detection.class_agnostic", "yes", "detection.class_agnostic: expected true or false"),
        ("detection.classes", [True], "detection.classes[0]: expected a class name or index"),
        ("output_resolution", "half", "output_resolution: expected one of source, network"),
        ("labls", ["a"], "labls: unknown key"),
        ("decoder", {"type": "yolo", "version": "v9"}, "decoder.version: 'v9' is not one of auto, v5, v8"),
        ("decoder", {"type": "rows", "threshold": 0.5}, "decoder.threshold: unknown parameter"),
        ("tensorrt", {"cuda_graph": "yes"}, "tensorrt.cuda_graph: expected true or false, got str 'yes'"),
        ("tensorrt", {"cuda_graphs": True}, "tensorrt.cuda_graphs: unknown key"),
        ("tensorrt", {"precision": "bf16"}, "tensorrt.precision: expected one of fp32, fp16, int8, got 'bf16'"),
        ("tensorrt", {"precision": "int8"}, "tensorrt.precision: int8 needs tensorrt.calibration_images"),
        ("tensorrt", True, "tensorrt: expected a mapping, got bool True"),
    ],
)
def test_bad_spec_names_the_key(tmp_path, key, value, message):
    with pytest.raises(SpecError) as caught:
        load_model_spec(write_spec(tmp_path, with_change(key, value)))
    assert message in str(caught.value)
    assert str(tmp_path / "spec.yaml") in str(caught.value), "the error names the spec file"


def test_detection_section_rejected_for_segmentation(tmp_path):
    data = with_change("task", "segmentation")
    with pytest.raises(SpecError, match="detection: only valid when task is detection"):
        parse_model_spec(data, tmp_path)


def test_labels_file_with_a_byte_order_mark_and_crlf_lines(tmp_path):
    """A labels file saved by Windows Notepad starts with a UTF-8 byte order mark, which became part of
    the first class name ('\ufeffcat'), so detection.classes: [cat] was an unknown class name."""
    (tmp_path / "labels.txt").write_bytes(b"\xef\xbb\xbfcat\r\ndog\r\n")
    spec = load_model_spec(write_spec(tmp_path, with_change("detection.classes", ["cat"]) | {"labels": "labels.txt"}))
    assert spec.labels == ("cat", "dog")


def test_uint8_input_with_a_fractional_pad_value_is_rejected(tmp_path):
    """A uint8 input holds whole pixels: pad_value 0.4 was rounded to 0 without a word."""
    data = with_change("input", {"size": [8, 8], "dtype": "uint8", "normalization": {"type": "none"},
                                 "resize": "keep_aspect_ratio", "pad_value": [0.4, 0, 0]})
    with pytest.raises(SpecError, match=r"input.pad_value: a uint8 input takes whole pixel values, got \[0.4, 0.0, 0.0\]$"):
        load_model_spec(write_spec(tmp_path, data))
    data["input"]["pad_value"] = [114, 0, 255]
    assert load_model_spec(write_spec(tmp_path, data)).input.pad_value == (114, 0, 255)


def test_uint8_input_with_normalization_is_rejected(tmp_path):
    data = with_change("input.dtype", "uint8")
    with pytest.raises(SpecError, match="input.normalization.type: a uint8 input takes raw pixels"):
        parse_model_spec(data, tmp_path)


def test_empty_line_inside_labels_file_is_rejected(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\n\ndog\n", encoding="utf-8")
    with pytest.raises(SpecError, match="labels: line 2 of .*labels.txt is empty"):
        parse_model_spec(with_change("labels", "labels.txt"), tmp_path)


def test_size_that_is_neither_list_nor_mapping_names_both_forms(tmp_path):
    with pytest.raises(SpecError, match=r"input.size: expected \[height, width\] or \{short_side, multiple_of, max_long_side\}, got"):
        parse_model_spec(with_change("input.size", "256"), tmp_path)


@pytest.mark.parametrize(
    ("size", "key", "side"),
    [
        ([100000, 640], r"input\.size\[0\]", 100000),  # 1000 typed as 100000
        ([640, 16385], r"input\.size\[1\]", 16385),
        ({"short_side": 73600}, r"input\.size\.short_side", 73600),
        ({"short_side": 736, "max_long_side": 200000}, r"input\.size\.max_long_side", 200000),
        ({"short_side": 736, "multiple_of": 32000000}, r"input\.size\.multiple_of", 32000000),
    ],
)
def test_a_network_side_beyond_16384_pixels_is_a_spec_error(tmp_path, size, key, side):
    with pytest.raises(SpecError, match=rf"^{key}: {side} pixels; a network input side is at most 16384$"):
        parse_model_spec(with_change("input.size", size), tmp_path)


@pytest.mark.parametrize(
    ("rule", "name", "side", "rounded"),
    [
        ({"short_side": 736, "max_long_side": 16383, "multiple_of": 7}, "max_long_side", 16383, 16387),  # 2341 * 7
        ({"short_side": 16300, "multiple_of": 1000}, "short_side", 16300, 17000),
    ],
)
def test_a_dynamic_rule_whose_rounding_passes_16384_pixels_is_a_spec_error(tmp_path, rule, name, side, rounded):
    with pytest.raises(SpecError, match=rf"^input\.size\.{name}: {side} rounded to a multiple of {rule['multiple_of']} "
                                        rf"can give {rounded} pixels; a network input side is at most 16384$"):
        parse_model_spec(with_change("input.size", rule), tmp_path)


def test_network_sides_of_16384_pixels_are_accepted(tmp_path):
    assert parse_model_spec(with_change("input.size", [16384, 16384]), tmp_path).input.size == (16384, 16384)
    rule = parse_model_spec(with_change("input.size", {"short_side": 16384, "max_long_side": 16384}), tmp_path).input.size
    assert isinstance(rule, DynamicSize) and rule.short_side == rule.max_long_side == 16384


def test_tensorrt_backend_accepts_an_onnx_model_alone(tmp_path):
    spec = parse_model_spec(with_change("backend", "tensorrt"), tmp_path)
    assert spec.backend == "tensorrt" and spec.engine is None and spec.model is not None


def test_bundled_name_is_found_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    # e.g. the output folder of `trt-perception infer --model-spec selfie_segmentation --output selfie_segmentation`
    monkeypatch.chdir(tmp_path)
    (tmp_path / "selfie_segmentation").mkdir()
    spec = load_model_spec("selfie_segmentation")
    assert spec.source.parent.name == "models" and spec.source.name == "selfie_segmentation.yaml"


def test_unknown_name_and_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="'no_such_model' is neither a file nor a bundled spec.*selfie_segmentation"):
        load_model_spec("no_such_model")
    with pytest.raises(SpecError, match="model spec file not found: .*absent.yaml"):
        load_model_spec(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: [segmentation\n", encoding="utf-8")
    with pytest.raises(SpecError, match="broken.yaml: not valid YAML"):
        load_model_spec(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- task\n", encoding="utf-8")
    with pytest.raises(SpecError, match="spec: expected a mapping, got list"):
        load_model_spec(listed)


def test_bundled_lookup_works_without_a_sourced_ros_environment(monkeypatch):
    # ament_index_python raises OSError when AMENT_PREFIX_PATH is unset (a plain venv): not fatal
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    assert load_model_spec("ppocrv4_det").name == "ppocrv4_det"


def test_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    # "billion laughs": nine levels of nine aliases each expand 1 KB into 9^9 strings
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]" for level in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 2000
    with pytest.raises(SpecError, match=r"bomb.yaml: not valid YAML: aliases \(\*a0\) are not allowed in a model spec"):
        load_model_spec(path)


def test_oversized_spec_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("task: segmentation\n" + "# padding\n" * 200_000)
    with pytest.raises(SpecError, match=r"huge.yaml: \d+ bytes, more than a model spec may have \(1048576\)"):
        load_model_spec(path)


def test_spec_that_is_not_utf8_or_nested_too_deep_is_a_spec_error(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\u00e9\ntask: segmentation\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin1.yaml: not UTF-8 text \(byte 9: invalid continuation byte\)"):
        load_model_spec(latin1)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 100_000 + "\n")  # PyYAML composes recursively: a RecursionError unchecked
    with pytest.raises(SpecError, match=r"deep.yaml: not valid YAML: lists and mappings nested more than 32 deep"):
        load_model_spec(deep)
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"background\nperson\xff\n")
    spec = tmp_path / "labels.yaml"
    spec.write_text("task: segmentation\nmodel: m.onnx\nlabels: labels.txt\n"
                    "input: {size: [8, 8]}\ndecoder: {type: logits}\n")
    with pytest.raises(SpecError, match=r"labels: labels file .*labels.txt is not UTF-8 text \(byte 17"):
        load_model_spec(spec)


def test_a_key_given_twice_is_a_spec_error(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys: score_threshold 0.4 then 0.9 loaded as 0.9 without a word."""
    text = yaml.safe_dump(VALID, sort_keys=False).replace(
        "  score_threshold: 0.4\n", "  score_threshold: 0.4\n  score_threshold: 0.9\n"
    )
    assert text.count("score_threshold") == 2
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=r"twice.yaml: not valid YAML: duplicate key 'score_threshold' \(line \d+, column 3\)$"):
        load_model_spec(path)
    path.write_text(text.replace("  score_threshold: 0.9\n", ""))
    assert load_model_spec(path).detection.score_threshold == 0.4
