"""Bad models, specs and inputs raise errors naming the problem; the ONNX Runtime backend's contract."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from onnx_builders import activation_model, build_model, colour_scores_model

from trt_perception.backends import create_backend, resolve_backend_kind
from trt_perception.backends.onnxruntime import OnnxRuntimeBackend, default_providers
from trt_perception.errors import InferenceError, ModelLoadError, SpecError
from trt_perception.pipeline import Pipeline
from trt_perception.spec import load_model_spec, parse_model_spec

ASTRONAUT = Path(__file__).resolve().parent / "fixtures" / "images" / "astronaut.png"


def sqrt_of_mean_model(width: int | str = 8) -> onnx.ModelProto:
    """``y = sqrt(mean over channels of x)``: x [1,3,8,width] -> y [1,1,8,width]; NaN where the mean is
    negative. A text ``width`` is a dynamic dimension of that name."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=1),  # opset 17: axes attribute
        helper.make_node("Sqrt", ["mean"], ["y"]),
    ]
    return build_model(nodes, {"x": [1, 3, 8, width]}, {"y": (TensorProto.FLOAT, [1, 1, 8, width])})


def tiny_spec(folder: Path, model: onnx.ModelProto | None, **changes) -> dict:
    path = folder / "tiny.onnx"
    if model is not None:
        onnx.save(model, path)
    data = {
        "task": "segmentation",
        "model": str(path),
        "input": {"size": [8, 8], "layout": "NCHW", "normalization": {"type": "symmetric"}},
        "decoder": {"type": "binary", "output": "y", "threshold": 0.5},
    }
    for key, value in changes.items():
        section, _, name = key.rpartition("__")
        (data[section] if section else data)[name] = value
    return data


def tiny_pipeline(folder: Path, model: onnx.ModelProto | None, **changes) -> Pipeline:
    return Pipeline.from_spec(parse_model_spec(tiny_spec(folder, model, **changes), folder))


# --------------------------------------------------------------------------- model files

def test_model_path_that_is_a_folder_is_named_as_such(tmp_path):
    with pytest.raises(ModelLoadError, match=f"ONNX model path is not a file: {tmp_path}"):
        OnnxRuntimeBackend(tmp_path)


def test_missing_model_file_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match=f"ONNX model file not found: {tmp_path / 'tiny.onnx'}"):
        tiny_pipeline(tmp_path, None)


def test_corrupt_model_file_names_the_path_and_reason(tmp_path):
    (tmp_path / "tiny.onnx").write_bytes(b"\x08\x07 this is not a protobuf model")
    with pytest.raises(ModelLoadError, match=r"cannot load ONNX model .*tiny\.onnx: .*(?i:protobuf)"):
        tiny_pipeline(tmp_path, None)


def test_unavailable_execution_provider_is_named(tmp_path):
    onnx.save(sqrt_of_mean_model(), tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="execution provider NoSuchExecutionProvider not available"):
        OnnxRuntimeBackend(tmp_path / "m.onnx", providers=["NoSuchExecutionProvider"])
    assert default_providers()[-1] == "CPUExecutionProvider"


# --------------------------------------------------------------------------- spec vs model

@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input__name": "image"}, r"input.name: the model has no input 'image' \(inputs: x\)"),
        ({"input__size": [16, 16]}, r"input.size: the spec gives \[16, 16\] but the model input 'x' has shape \[1, 3, 8, 8\]"),
        ({"input__layout": "NHWC"}, "input.layout: the model input 'x' has shape"),
        ({"input__dtype": "float16"}, "input.dtype: the model input 'x' is float32, the spec says float16"),
        ({"decoder": {"type": "binary", "output": "y", "thresold": 0.5}}, "decoder.thresold: unknown parameter"),
    ],
)
def test_spec_that_does_not_fit_the_model_is_named(tmp_path, changes, message):
    with pytest.raises(SpecError, match=message):
        tiny_pipeline(tmp_path, sqrt_of_mean_model(), **changes)


def test_model_with_a_second_input_is_refused_at_load_whether_or_not_input_name_is_set(tmp_path):
    """The old message said 'name one'; with input.name set the pipeline loaded and every frame failed
    with "input tensor 'scale' ... was not given"."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=1),
             helper.make_node("Add", ["mean", "scale"], ["y"])]
    model = build_model(nodes, {"x": [1, 3, 8, 8], "scale": [1, 1, 8, 8]}, {"y": (TensorProto.FLOAT, [1, 1, 8, 8])})
    message = (r"^input: the model has 2 inputs \(x, scale\); the pipeline feeds one image tensor, so it runs only "
               r"models whose image is their only input$")
    for name in (None, "x"):
        with pytest.raises(SpecError, match=message):
            tiny_pipeline(tmp_path, model, input__name=name)


def test_dynamic_size_rule_for_a_fixed_size_model_is_named_at_load(tmp_path):
    """A dynamic input.size for a model of fixed height and width loaded and failed on the first
    frame whose size gave another network size; a rule that always gives the model's size still runs."""
    message = (r"^input.size: the dynamic size rule gives a 10x8 network input for a 640x480 image \(width x height\) "
               r"but the model input 'x' has shape \[1, 3, 8, 8\] \(NCHW\); give input.size as \[height, width\]: \[8, 8\]$")
    with pytest.raises(SpecError, match=message):
        tiny_pipeline(tmp_path, sqrt_of_mean_model(), input__size={"short_side": 8})
    constant = tiny_pipeline(tmp_path, sqrt_of_mean_model(), input__size={"short_side": 8, "max_long_side": 8, "multiple_of": 8})
    assert constant.run(np.full((480, 640, 3), 255, np.uint8), "RGB").labels.shape == (480, 640)
    # a model of fixed height and dynamic width takes a short-side rule that gives its height for landscape
    # cameras (portrait ones are not tried: such a model cannot take them whatever the rule)
    fixed_height = tiny_pipeline(tmp_path, sqrt_of_mean_model("w"), input__size={"short_side": 8})
    for height, width in ((480, 640), (720, 1280)):
        result = fixed_height.run(np.full((height, width, 3), 255, np.uint8), "RGB")
        assert result.labels.shape == (height, width) and result.geometry.network_size[0] == 8
    message = (r"^input.size: the dynamic size rule gives a \d+x16 network input for a 640x480 image \(width x height\) "
               r"but the model input 'x' has shape \[1, 3, 8, None\] \(NCHW\); the rule must give the model's fixed "
               r"height, 8, for every camera$")
    with pytest.raises(SpecError, match=message):
        tiny_pipeline(tmp_path, sqrt_of_mean_model("w"), input__size={"short_side": 16})


def test_detection_class_index_beyond_the_labels_is_named_at_load():
    """classes: [80] with the 80 COCO labels (indices 0..79) was accepted and filtered out every detection."""
    spec = load_model_spec("centernet_mobilenetv3_coco")
    beyond = dataclasses.replace(spec, detection=dataclasses.replace(spec.detection, classes=(0, 80)))
    with pytest.raises(SpecError, match=r"detection.classes: class index 80 is beyond the 80 labels \(indices 0..79\)"):
        Pipeline.from_spec(beyond)
    last = dataclasses.replace(spec, detection=dataclasses.replace(spec.detection, classes=(79, "person")))
    assert Pipeline.from_spec(last).detection_filter.allowed_class_ids == frozenset({79, 0})


def test_backend_choice(tmp_path):
    spec = parse_model_spec(tiny_spec(tmp_path, sqrt_of_mean_model(), engine="model.engine"), tmp_path)
    tensorrt_installed = __import__("importlib").util.find_spec("tensorrt") is not None
    assert resolve_backend_kind(spec) == ("tensorrt" if tensorrt_installed else "onnxruntime")
    assert resolve_backend_kind(spec, "onnxruntime") == "onnxruntime"
    engine_only = dataclasses.replace(spec, model=None)
    if not tensorrt_installed:
        with pytest.raises(SpecError, match="model: the onnxruntime backend needs an ONNX model path"):
            create_backend(engine_only)
        with pytest.raises(ModelLoadError):
            create_backend(engine_only, "tensorrt")


# --------------------------------------------------------------------------- outputs

def test_spec_errors_found_by_the_pipeline_name_the_spec_file(tmp_path):
    """Errors only the model reveals (input name), or in a spec changed after loading, name its file."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(tmp_path, sqrt_of_mean_model(), input__name="image")))
    spec = load_model_spec(path)
    with pytest.raises(SpecError, match=rf"^{path}: input.name: the model has no input 'image' \(inputs: x\)$"):
        Pipeline.from_spec(spec)
    changed = dataclasses.replace(spec, input=dataclasses.replace(spec.input, name=None),
                                  decoder={"type": "binary", "output": "y", "threshold": "high"})
    with pytest.raises(SpecError, match=f"^{path}: decoder.threshold: expected a number, got 'high'$"):
        Pipeline.from_spec(changed)


def test_nan_output_is_an_inference_error_naming_the_tensor(tmp_path):
    pipeline = tiny_pipeline(tmp_path, sqrt_of_mean_model())
    white = np.full((8, 8, 3), 255, np.uint8)  # symmetric: 1.0 -> sqrt 1.0 > 0.5 everywhere
    assert np.all(pipeline.run(white, "RGB").labels == 1)
    black = np.zeros((8, 8, 3), np.uint8)  # symmetric: -1.0 -> sqrt NaN
    with pytest.raises(InferenceError, match="output 'y' contains 64 NaN or infinite values"):
        pipeline.run(black, "RGB")


def test_wrong_decoder_output_name_is_named_before_the_first_frame(tmp_path):
    with pytest.raises(SpecError, match=r"decoder.output: the model has no output 'probability'; its outputs: y \[1,1,8,8\]"):
        tiny_pipeline(tmp_path, sqrt_of_mean_model(), decoder={"type": "binary", "output": "probability"})


def test_segmentation_output_that_cannot_fit_the_decoder_is_named_before_the_first_frame(tmp_path):
    """A logits output with more class channels than labels, or a binary decoder on a 3-channel
    output, failed only on the first frame (InferenceError); the declared shapes tell at load."""
    scores = colour_scores_model()  # scores [1,3,h,w]
    with pytest.raises(SpecError, match=r"^labels: the model output 'scores' has 3 class channels \(shape \[1, 3, None, None\], "
                                        r"decoder.layout NCHW\) but the spec has 2 labels$"):
        tiny_pipeline(tmp_path, scores, labels=["a", "b"], decoder={"type": "logits", "output": "scores"})
    with pytest.raises(SpecError, match=r"^decoder.output: the model output 'y' has shape \[1,3,8,8\]; expected one "
                                        r"channel: \[B,H,W\], \[B,1,H,W\] or \[B,H,W,1\]"):
        tiny_pipeline(tmp_path, activation_model("Identity", [1, 3, 8, 8]))  # decoder binary on y
    with pytest.raises(SpecError, match=r"^labels: the model output 'y' has 1 class channels .* the spec has 3 labels$"):
        tiny_pipeline(tmp_path, sqrt_of_mean_model(), labels=["a", "b", "c"], decoder={"type": "logits", "output": "y"})
    assert tiny_pipeline(tmp_path, scores, labels=["r", "g", "b"], decoder={"type": "logits", "output": "scores"})


# --------------------------------------------------------------------------- backend contract

@pytest.fixture
def identity_backend(tmp_path) -> OnnxRuntimeBackend:
    onnx.save(activation_model("Identity", [1, 3, "H", "W"]), tmp_path / "identity.onnx")
    return OnnxRuntimeBackend(tmp_path / "identity.onnx", intra_op_threads=1)


def test_backend_metadata_and_dynamic_output_buffers(identity_backend):
    (x,), (y,) = identity_backend.inputs, identity_backend.outputs
    assert (x.name, x.shape, x.dtype, x.is_dynamic) == ("x", (1, 3, None, None), np.float32, True)
    assert (y.name, y.shape) == ("y", (1, 3, None, None))
    buffers = identity_backend.allocate_outputs({"x": (1, 3, 5, 7)})  # H, W are named like the input's
    assert buffers["y"].shape == (1, 3, 5, 7)
    data = np.arange(105, dtype=np.float32).reshape(1, 3, 5, 7)
    result = identity_backend.infer({"x": data}, buffers)
    assert result["y"] is buffers["y"], "the given buffer is filled, not replaced"
    np.testing.assert_array_equal(buffers["y"], data)
    np.testing.assert_array_equal(identity_backend.infer({"x": data})["y"], data)


def test_bound_buffers_follow_new_contents_shapes_and_arrays(identity_backend):
    """The IOBinding is reused across calls; what it computes always follows the arrays passed now."""
    rng = np.random.default_rng(3)
    frame = np.empty((1, 3, 5, 7), np.float32)
    buffers = identity_backend.allocate_outputs({"x": frame.shape})
    for _ in range(3):  # same buffers, new contents each time (as Pipeline's reused input buffer)
        frame[...] = rng.standard_normal(frame.shape)
        np.testing.assert_array_equal(identity_backend.infer({"x": frame}, buffers)["y"], frame)
    other = rng.standard_normal((1, 3, 5, 7)).astype(np.float32)  # another input array, same shape
    np.testing.assert_array_equal(identity_backend.infer({"x": other}, buffers)["y"], other)
    other_buffers = identity_backend.allocate_outputs({"x": frame.shape})  # another output array
    assert identity_backend.infer({"x": frame}, other_buffers)["y"] is other_buffers["y"]
    np.testing.assert_array_equal(other_buffers["y"], frame)
    larger = rng.standard_normal((1, 3, 9, 4)).astype(np.float32)  # new shape
    np.testing.assert_array_equal(
        identity_backend.infer({"x": larger}, identity_backend.allocate_outputs({"x": larger.shape}))["y"], larger
    )
    strided = np.asarray(rng.standard_normal((1, 5, 7, 3)), np.float32).transpose(0, 3, 1, 2)  # not contiguous
    np.testing.assert_array_equal(identity_backend.infer({"x": strided}, buffers)["y"], strided)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"image": np.zeros((1, 3, 4, 4), np.float32)}, r"input tensor 'image' is not an input of identity.onnx \(inputs: x\)"),
        ({"x": np.zeros((3, 4, 4), np.float32)}, r"input tensor 'x': expected rank 4 \[1, 3, \?, \?\], got rank 3"),
        ({"x": np.zeros((1, 4, 4, 3), np.float32)}, r"input tensor 'x': expected shape \[1, 3, \?, \?\], got \[1, 4, 4, 3\]"),
        ({"x": np.zeros((1, 3, 4, 4), np.float64)}, "input tensor 'x': expected dtype float32, got float64"),
        ({}, "input tensor 'x' of identity.onnx was not given"),
    ],
)
def test_backend_rejects_bad_inputs_naming_the_tensor(identity_backend, inputs, message):
    with pytest.raises(InferenceError, match=message):
        identity_backend.infer(inputs)


def test_backend_rejects_bad_output_buffers(identity_backend):
    data = np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(InferenceError, match="output buffer 'y': expected a writeable C-contiguous float32 array"):
        identity_backend.infer({"x": data}, {"y": np.zeros((1, 3, 4, 4), np.float64)})
    with pytest.raises(InferenceError, match=r"output buffer 'y': expected shape \[1, 3, \?, \?\], got \[1, 4\]"):
        identity_backend.infer({"x": data}, {"y": np.zeros((1, 4), np.float32)})
    with pytest.raises(InferenceError, match="inference of identity.onnx failed"):
        identity_backend.infer({"x": data}, {"y": np.zeros((1, 3, 5, 5), np.float32)})


# --------------------------------------------------------------------------- channel orders and resolution

def test_pipeline_gives_the_same_mask_for_every_channel_order_and_network_resolution():
    bundled = load_model_spec("selfie_segmentation")  # thresholded before upsampling here, so the
    spec = dataclasses.replace(bundled, decoder={**bundled.decoder, "upsample": "after_threshold"})  # nearest rule holds
    pipeline = Pipeline.from_spec(spec, intra_op_threads=1)
    bgr = cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR)
    reference = pipeline.run(bgr, "BGR").labels
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    assert np.array_equal(pipeline.run(rgb, "RGB").labels, reference)
    assert np.array_equal(pipeline.run(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), "BGRA").labels, reference)
    assert np.array_equal(pipeline.run(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA), "RGBA").labels, reference)
    network = Pipeline(dataclasses.replace(spec, output_resolution="network"), pipeline.backend)
    small = network.run(bgr, "BGR").labels
    assert small.shape == (256, 256)
    upscaled = cv2.resize(small, (512, 512), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(upscaled, reference), "source labels are the network labels upsampled (nearest)"


def test_auto_backend_ignores_a_tensorrt_module_that_is_only_type_stubs(tmp_path, monkeypatch):
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("class Runtime: ...\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    spec = load_model_spec("selfie_segmentation")
    assert resolve_backend_kind(spec) == "onnxruntime"
    with pytest.raises(ModelLoadError, match="not TensorRT"):
        create_backend(spec, "tensorrt")
