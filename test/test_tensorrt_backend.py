"""TensorRTBackend against the TensorRT test double (engines executed by ONNX Runtime).

The double follows TensorRT's calling conventions (named tensors, -1 dims until set_input_shape,
raw device addresses, streams); with the CuPy shim "device" memory is host memory, so these tests
check buffer management, copies, shapes and error paths, not TensorRT's numerics. With
TRT_DOUBLE_REAL_CUPY=1 on a GPU machine the buffers, copies and streams are real CUDA.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from tensorrt_double import build_engine_file, fake_cupy, install, unpack_plan, uses_real_cupy
from tensorrt_double.fake_tensorrt import _pack_plan

from trt_perception.backends import Backend, create_backend
from trt_perception.backends.onnxruntime import OnnxRuntimeBackend
from trt_perception.errors import InferenceError, ModelLoadError
from trt_perception.image_files import read_image
from trt_perception.preprocess import Preprocessor
from trt_perception.spec import ModelSpec, load_model_spec
from trt_perception.tensorrt.backend import EngineMismatchError, TensorRTBackend, classify_load_failure, profile_shapes
from trt_perception.tensorrt.engine_builder import BuildOptions, build_engine
from trt_perception.tensorrt.runtime_support import import_cupy, require_tensorrt

IMAGES = Path(__file__).parent / "fixtures" / "images"


@pytest.fixture
def trt10(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    return install(monkeypatch, "10.3.0")


@pytest.fixture(scope="module")
def ppocr() -> ModelSpec:
    return load_model_spec("ppocrv4_det")


def network_input(spec: ModelSpec, image: str) -> np.ndarray:
    pixels, channel_order = read_image(IMAGES / image)
    tensor, _ = Preprocessor(spec.input)(pixels, channel_order)
    return tensor


@pytest.mark.parametrize(
    ("spec_name", "images"),
    [
        ("ppocrv4_det", ["page.png", "coffee.png"]),  # dynamic NCHW, shape changes between images
        ("selfie_segmentation", ["astronaut.png"]),  # static NHWC
        ("centernet_mobilenetv3_coco", ["motorcycle_left.png"]),  # three outputs share one buffer
    ],
)
def test_outputs_equal_onnxruntime_on_real_images(
    trt10: types.ModuleType, tmp_path: Path, spec_name: str, images: list[str]
) -> None:
    spec = load_model_spec(spec_name)
    backend = TensorRTBackend(build_engine_file(tmp_path, spec))
    reference = OnnxRuntimeBackend(spec.model)
    assert isinstance(backend, Backend)
    assert [info.name for info in backend.outputs] == [info.name for info in reference.outputs]
    for image in images:
        tensor = network_input(spec, image)
        expected = reference.infer({backend.inputs[0].name: tensor})
        actual = backend.infer({backend.inputs[0].name: tensor})
        assert actual.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(actual[name], expected[name], err_msg=f"{spec_name} {image} {name}")
    backend.close()


def test_dynamic_shapes_report_none_and_outputs_follow_inputs(
    trt10: types.ModuleType, tmp_path: Path, ppocr: ModelSpec
) -> None:
    backend = TensorRTBackend(build_engine_file(tmp_path, ppocr))
    assert backend.inputs[0].shape == (None, 3, None, None)
    assert backend.outputs[0].shape == (None, 1, None, None)
    for height, width in [(64, 96), (160, 32), (96, 64)]:
        outputs = backend.infer({"x": np.zeros((1, 3, height, width), np.float32)})
        assert outputs["sigmoid_0.tmp_0"].shape == (1, 1, height, width)


def test_one_copy_each_way_per_frame_and_buffers_reused(
    trt10: types.ModuleType, tmp_path: Path, ppocr: ModelSpec
) -> None:
    backend = TensorRTBackend(build_engine_file(tmp_path, ppocr))
    reference = OnnxRuntimeBackend(ppocr.model)
    crop = network_input(ppocr, "page.png")[:, :, :96, :128]
    frames = [np.ascontiguousarray(np.roll(crop, shift, axis=3)) for shift in (0, 40, 80)]
    for frame in frames:
        expected = reference.infer({"x": frame})["sigmoid_0.tmp_0"]
        np.testing.assert_array_equal(backend.infer({"x": frame})["sigmoid_0.tmp_0"], expected)
    assert backend.buffer_allocations == 2  # one input arena, one output arena
    if not uses_real_cupy():
        assert fake_cupy.stats.copies == {"h2d": 3, "d2h": 3, "d2d": 0}
    backend.infer({"x": np.zeros((1, 3, 64, 64), np.float32)})  # smaller: fits the buffers
    assert backend.buffer_allocations == 2
    backend.infer({"x": np.zeros((1, 3, 256, 256), np.float32)})  # larger: both grow once
    assert backend.buffer_allocations == 4
    backend.infer({"x": np.zeros((1, 3, 96, 128), np.float32)})
    assert backend.buffer_allocations == 4


def test_preallocated_outputs_are_filled_in_place(trt10: types.ModuleType, tmp_path: Path, ppocr: ModelSpec) -> None:
    backend = TensorRTBackend(build_engine_file(tmp_path, ppocr))
    tensor = np.ascontiguousarray(network_input(ppocr, "page.png")[:, :, :256, :320])
    outputs = backend.allocate_outputs({"x": tensor.shape})
    returned = backend.infer({"x": tensor}, outputs)
    assert returned["sigmoid_0.tmp_0"] is outputs["sigmoid_0.tmp_0"]
    np.testing.assert_array_equal(
        outputs["sigmoid_0.tmp_0"], OnnxRuntimeBackend(ppocr.model).infer({"x": tensor})["sigmoid_0.tmp_0"]
    )
    wrong = {"sigmoid_0.tmp_0": np.empty((1, 1, 32, 32), np.float32)}
    with pytest.raises(InferenceError, match=r"outputs\['sigmoid_0.tmp_0'\].*allocate_outputs"):
        backend.infer({"x": tensor}, wrong)


def test_device_arrays_run_without_host_copies(trt10: types.ModuleType, tmp_path: Path, ppocr: ModelSpec) -> None:
    backend = TensorRTBackend(build_engine_file(tmp_path, ppocr))
    cupy = import_cupy()
    tensor = np.ascontiguousarray(network_input(ppocr, "coffee.png")[:, :, :256, :320])
    device_input = cupy.asarray(tensor)
    copies_before = dict(fake_cupy.stats.copies)
    device_outputs = backend.infer_device({"x": device_input})
    if not uses_real_cupy():
        assert fake_cupy.stats.copies == copies_before
    expected = OnnxRuntimeBackend(ppocr.model).infer({"x": tensor})["sigmoid_0.tmp_0"]
    np.testing.assert_array_equal(device_outputs["sigmoid_0.tmp_0"].get(), expected)
    # the host path afterwards binds its own input buffer again
    np.testing.assert_array_equal(backend.infer({"x": tensor})["sigmoid_0.tmp_0"], expected)


def identity_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["frame"], ["copy"], name="copy_frame")],
        "identity",
        [helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, 3, 48, 64])],
        [helper.make_tensor_value_info("copy", TensorProto.FLOAT, [1, 3, 48, 64])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def test_cuda_graph_replays_frames_with_new_contents(trt10: types.ModuleType, tmp_path: Path) -> None:
    model = identity_model(tmp_path / "identity.onnx")
    engine = tmp_path / "identity.engine"
    engine.write_bytes(build_engine(model, BuildOptions(), None))
    backend = TensorRTBackend(engine, cuda_graph=True)
    frames = np.random.default_rng(5).standard_normal((4, 1, 3, 48, 64)).astype(np.float32)
    np.testing.assert_array_equal(backend.infer({"frame": frames[0]})["copy"], frames[0])  # runs plainly, then captured
    graph = backend._graph
    assert graph is not None and backend.cuda_graph
    for frame in frames[1:]:  # replays: upload, engine, download of the new contents
        np.testing.assert_array_equal(backend.infer({"frame": frame})["copy"], frame)
    assert backend._graph is graph
    if not uses_real_cupy():
        assert graph.launches == 3


def test_cuda_graph_with_an_uncapturable_engine(trt10: types.ModuleType, tmp_path: Path, ppocr: ModelSpec) -> None:
    backend = TensorRTBackend(build_engine_file(tmp_path, ppocr), cuda_graph=True)
    reference = OnnxRuntimeBackend(ppocr.model)
    crop = network_input(ppocr, "page.png")[:, :, :64, :96]
    frames = [np.ascontiguousarray(np.roll(crop, shift, axis=3)) for shift in (0, 30, 60)]
    for frame in frames:
        np.testing.assert_array_equal(
            backend.infer({"x": frame})["sigmoid_0.tmp_0"], reference.infer({"x": frame})["sigmoid_0.tmp_0"]
        )
    if uses_real_cupy():  # the double runs ONNX Runtime synchronously: real capture fails, plain runs go on
        assert backend.cuda_graph is False and backend._graph is None
    else:  # the shim records the host work too, so the graph replays it
        assert backend._graph is not None and backend._graph.launches == 2
        backend.infer({"x": np.zeros((1, 3, 32, 32), np.float32)})  # new shape: captured again
        assert backend._graph.launches == 0


def test_cuda_graph_capture_failure_falls_back(
    trt10: types.ModuleType, tmp_path: Path, ppocr: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = TensorRTBackend(build_engine_file(tmp_path, ppocr), cuda_graph=True)

    def refuse(mode: object = None) -> None:
        raise RuntimeError("cudaErrorStreamCaptureUnsupported")

    monkeypatch.setattr(backend.stream, "begin_capture", refuse)
    frame = np.full((1, 3, 32, 64), 0.5, np.float32)
    expected = OnnxRuntimeBackend(ppocr.model).infer({"x": frame})["sigmoid_0.tmp_0"]
    for _ in range(2):
        np.testing.assert_array_equal(backend.infer({"x": frame})["sigmoid_0.tmp_0"], expected)
    assert backend.cuda_graph is False


@pytest.mark.parametrize("cuda_graph", [True, False])
def test_spec_cuda_graph_setting_reaches_the_backend(
    trt10: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cuda_graph: bool
) -> None:
    """``tensorrt: {cuda_graph: ...}`` in a spec file decides whether the engine's frames replay as a graph,
    for a given engine and for one built through the engine cache."""
    selfie = load_model_spec("selfie_segmentation")
    engine = build_engine_file(tmp_path, selfie)
    monkeypatch.setenv("TRT_PERCEPTION_ENGINE_CACHE", str(tmp_path / "cache"))
    frame = network_input(selfie, "astronaut.png")
    expected = OnnxRuntimeBackend(selfie.model).infer({"input_1": frame})["activation_10"]
    data = yaml.safe_load(selfie.source.read_text())
    data.update(model=str(selfie.model), tensorrt={"cuda_graph": cuda_graph})
    for given_engine in (engine, None):
        data["engine"] = None if given_engine is None else str(given_engine)
        spec_file = tmp_path / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(data))
        backend = create_backend(load_model_spec(spec_file), "tensorrt")
        assert isinstance(backend, TensorRTBackend) and backend.cuda_graph is cuda_graph
        assert (backend.engine_path == engine) is (given_engine is not None)  # else built by the cache
        for _ in range(3):
            np.testing.assert_array_equal(backend.infer({"input_1": frame})["activation_10"], expected)
        if not uses_real_cupy():  # the shim captures everything; real capture of the double may fail
            assert (backend._graph is not None) is cuda_graph
        backend.close()


def test_shape_outside_profile_names_input_and_limits(
    trt10: types.ModuleType, tmp_path: Path, ppocr: ModelSpec
) -> None:
    backend = TensorRTBackend(build_engine_file(tmp_path, ppocr))
    low, _, high = backend.input_profile("x")
    too_tall = (1, 3, high[2] + 32, 64)
    with pytest.raises(
        InferenceError,
        match=rf"'x' shape .*outside the engine's optimization profile"
        rf".*dimension 2 is {too_tall[2]}, allowed {low[2]}\.\.{high[2]}",
    ):
        backend.infer({"x": np.zeros(too_tall, np.float32)})
    with pytest.raises(InferenceError, match="rank 4"):
        backend.infer({"x": np.zeros((3, 64, 64), np.float32)})


def test_bad_inputs_name_the_tensor(trt10: types.ModuleType, tmp_path: Path, ppocr: ModelSpec) -> None:
    backend = TensorRTBackend(build_engine_file(tmp_path, ppocr))
    frame = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(InferenceError, match="no input named 'image'.*\\['x'\\]"):
        backend.infer({"x": frame, "image": frame})
    with pytest.raises(InferenceError, match="input 'x' .* was not given"):
        backend.infer({})
    with pytest.raises(InferenceError, match="'x' has dtype float64, the engine expects float32"):
        backend.infer({"x": frame.astype(np.float64)})
    with pytest.raises(
        InferenceError, match=r"allocate_outputs: expected shapes of the inputs \['x'\], got \['image'\]"
    ):
        backend.allocate_outputs({"image": (1, 3, 32, 32)})
    backend.close()
    with pytest.raises(InferenceError, match="was closed"):
        backend.infer({"x": frame})
    with pytest.raises(InferenceError, match="was closed"):
        backend.allocate_outputs({"x": frame.shape})


def test_engine_of_another_tensorrt_version_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ppocr: ModelSpec
) -> None:
    install(monkeypatch, "8.6.1")
    engine = build_engine_file(tmp_path, ppocr)
    install(monkeypatch, "10.3.0")
    with pytest.raises(
        EngineMismatchError, match=r"another TensorRT version than this one \(10.3.0\).*got 8.6.1"
    ) as caught:
        TensorRTBackend(engine)
    assert caught.value.reason == "tensorrt_version"


def test_engine_for_another_gpu_is_named(trt10: types.ModuleType, tmp_path: Path, ppocr: ModelSpec) -> None:
    if uses_real_cupy():
        pytest.skip("needs a simulated GPU change")
    engine = build_engine_file(tmp_path, ppocr)
    fake_cupy.device_properties.update({"name": b"Orin", "major": 8, "minor": 6})
    with pytest.raises(
        EngineMismatchError, match=r"another GPU than this one \(Orin\).*expecting compute 8.6 got compute 8.7"
    ) as caught:
        TensorRTBackend(engine)
    assert caught.value.reason == "gpu"


def test_unreadable_and_missing_engine_files(trt10: types.ModuleType, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.engine"
    garbage.write_bytes(b"\x00not an engine" * 10)
    with pytest.raises(EngineMismatchError, match="garbage.engine is not a TensorRT engine.*Magic tag") as caught:
        TensorRTBackend(garbage)
    assert caught.value.reason == "unreadable"
    with pytest.raises(ModelLoadError, match="cannot read TensorRT engine .*missing.engine"):
        TensorRTBackend(tmp_path / "missing.engine")


def test_standard_plugins_registered_before_deserializing(
    trt10: types.ModuleType, tmp_path: Path, ppocr: ModelSpec
) -> None:
    engine = build_engine_file(tmp_path, ppocr)
    header, onnx_bytes = unpack_plan(engine.read_bytes())
    engine.write_bytes(_pack_plan({**header, "plugins": ["EfficientNMS_TRT"]}, onnx_bytes))
    TensorRTBackend(engine)  # the double refuses plugin engines until init_libnvinfer_plugins ran
    assert trt10.plugin_initializations == [""]


def test_missing_tensorrt_stub_only_package_and_missing_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ModelLoadError, match="TensorRT's Python package cannot be imported"):
        require_tensorrt()
    stub_only = types.ModuleType("tensorrt")
    stub_only.__path__ = ["/site-packages/tensorrt"]  # what an installed tensorrt-stubs imports as
    monkeypatch.setitem(sys.modules, "tensorrt", stub_only)
    with pytest.raises(ModelLoadError, match="only type stubs"):
        require_tensorrt()
    install(monkeypatch, "8.4.3")
    with pytest.raises(ModelLoadError, match="TensorRT 8.4.3 is too old"):
        require_tensorrt()
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ModelLoadError, match="needs CuPy.*pip install cupy-cuda12x"):
        import_cupy()


def test_profile_lookup_uses_each_versions_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ppocr: ModelSpec
) -> None:
    shapes = {}
    for version in ("8.5.2.2", "8.6.1", "10.3.0", "11.4.0"):
        trt = install(monkeypatch, version)
        engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(build_engine_file(tmp_path, ppocr).read_bytes())
        assert hasattr(engine, "get_tensor_profile_shape") == (version != "8.5.2.2")
        assert hasattr(engine, "get_profile_shape") == version.startswith("8.")
        shapes[version] = profile_shapes(engine, "x")
    assert len(set(shapes.values())) == 1


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        # TensorRT 8.5 / 8.6 / 10.x wording for a plan of another release
        (
            "Serialization assertion stdVersionRead == serializationVersion failed.Version tag does not match. "
            "Note: Current Version: 232, Serialized Engine Version: 213",
            "tensorrt_version",
        ),
        (
            "The engine plan file is not compatible with this version of TensorRT, expecting library version "
            "10.3.0.26 got 8.6.2.3, please rebuild.",
            "tensorrt_version",
        ),
        # another GPU, and a Jetson plan on a desktop GPU
        (
            "The engine plan file is generated on an incompatible device, expecting compute 8.7 got compute 7.2, "
            "please rebuild.",
            "gpu",
        ),
        (
            "Platform specific tag mismatch detected. TensorRT plan files are only supported on the target "
            "runtime platform they were created on.",
            "gpu",
        ),
        ("Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match", "unreadable"),
    ],
)
def test_load_failures_are_classified_from_tensorrts_messages(log: str, reason: str) -> None:
    assert classify_load_failure(log) == reason
