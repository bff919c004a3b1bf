"""Engine builder against the TensorRT test double of versions 8.5, 10 and 11.

The double records in each plan what the builder asked for (network flags, builder flags,
profile, workspace, DLA core, calibration batches read from device memory, timing cache use).
"""

from __future__ import annotations

import dataclasses
import shutil
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tensorrt_double import build_engine_file, install, unpack_plan

from trt_perception.image_files import read_image
from trt_perception.preprocess import Preprocessor, dynamic_network_size
from trt_perception.spec import DynamicSize, ModelSpec, load_model_spec
from trt_perception.tensorrt.engine_builder import (
    BuildOptions,
    EngineBuildError,
    ShapeRange,
    build_engine,
    network_flags,
    resolve_shape_ranges,
)

IMAGES = Path(__file__).parent / "fixtures" / "images"


@pytest.fixture(scope="module")
def ppocr() -> ModelSpec:
    return load_model_spec("ppocrv4_det")


@pytest.fixture(scope="module")
def selfie() -> ModelSpec:
    return load_model_spec("selfie_segmentation")


def plan_header(plan: bytes) -> dict:
    return unpack_plan(plan)[0]


def test_default_profile_covers_every_image_the_preprocessor_makes(
    monkeypatch: pytest.MonkeyPatch, ppocr: ModelSpec
) -> None:
    install(monkeypatch, "10.3.0")
    low, opt, high = plan_header(build_engine(ppocr.model, BuildOptions(), ppocr.input))["profile"]["x"]
    preprocess = Preprocessor(ppocr.input)
    shapes = [
        preprocess(*read_image(path))[0].shape for path in sorted(IMAGES.glob("*.png")) + sorted(IMAGES.glob("*.jpg"))
    ]
    shapes += [
        preprocess(np.zeros(size, np.uint8), "BGR")[0].shape for size in [(40, 2000, 3), (2000, 40, 3), (4000, 3000, 3)]
    ]
    for shape in shapes:
        assert all(lo <= dim <= hi for lo, dim, hi in zip(low, shape, high)), (shape, low, high)
    assert isinstance(ppocr.input.size, DynamicSize)
    assert tuple(opt[2:]) == dynamic_network_size((480, 640), ppocr.input.size, keep_aspect_ratio=True)
    assert low[:2] == opt[:2] == high[:2] == [1, 3]


def test_explicit_shape_ranges_are_used_and_checked(monkeypatch: pytest.MonkeyPatch, ppocr: ModelSpec) -> None:
    install(monkeypatch, "10.3.0")
    chosen = ShapeRange((1, 3, 64, 64), (1, 3, 320, 320), (1, 3, 640, 640))
    header = plan_header(build_engine(ppocr.model, BuildOptions(shapes={"x": chosen}), ppocr.input))
    assert header["profile"]["x"] == chosen.as_lists()
    with pytest.raises(EngineBuildError, match="need min <= opt <= max"):
        ShapeRange((1, 3, 640, 640), (1, 3, 320, 320), (1, 3, 640, 640))
    with pytest.raises(EngineBuildError, match="shape given for 'image'.*\\['x'\\]"):
        build_engine(ppocr.model, BuildOptions(shapes={"image": chosen}), ppocr.input)
    with pytest.raises(EngineBuildError, match="does not fit the model's shape"):
        resolve_shape_ranges(
            {"x": (-1, 3, -1, -1)},
            BuildOptions(shapes={"x": ShapeRange((1, 1, 8, 8), (1, 1, 8, 8), (1, 1, 8, 8))}),
            None,
        )


def test_dynamic_input_without_spec_or_range_is_named() -> None:
    with pytest.raises(EngineBuildError, match="input 'scale' has dynamic shape \\(-1,\\).*--min-shape"):
        resolve_shape_ranges({"image": (1, 3, 64, 64), "scale": (-1,)}, BuildOptions(), None)


def test_network_flags_per_version(monkeypatch: pytest.MonkeyPatch) -> None:
    trt = install(monkeypatch, "8.5.2.2")
    assert network_flags((8, 5)) == 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    install(monkeypatch, "10.3.0")
    assert network_flags((10, 3)) == 0  # explicit batch is implied; weakly typed unless asked
    install(monkeypatch, "11.4.0")
    assert network_flags((11, 4)) == 0  # strongly typed is implied


@pytest.mark.parametrize("version", ["8.5.2.2", "10.3.0"])
def test_fp16_sets_the_builder_flag_and_workspace_limit(
    monkeypatch: pytest.MonkeyPatch, selfie: ModelSpec, version: str
) -> None:
    install(monkeypatch, version)
    header = plan_header(build_engine(selfie.model, BuildOptions(precision="fp16", workspace_mib=64), selfie.input))
    assert header["flags"] == ["FP16"]
    assert header["workspace"] == 64 << 20
    assert header["profile"] == {}  # static model: no optimization profile needed


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_11_explains_strong_typing(
    monkeypatch: pytest.MonkeyPatch, selfie: ModelSpec, precision: str, tmp_path: Path
) -> None:
    install(monkeypatch, "11.4.0")
    options = BuildOptions(precision=precision, calib_images=tmp_path)
    with pytest.raises(
        EngineBuildError,
        match=f"--precision {precision}: TensorRT 11.4.0 builds strongly typed.*ModelOpt AutoCast.*Q/DQ",
    ):
        build_engine(selfie.model, options, selfie.input)
    header = plan_header(build_engine(selfie.model, BuildOptions(), selfie.input))
    assert header["flags"] == [] and header["network_flags"] == 0


def test_int8_calibrates_through_the_specs_preprocessing_and_reuses_the_cache(
    monkeypatch: pytest.MonkeyPatch, ppocr: ModelSpec, tmp_path: Path
) -> None:
    install(monkeypatch, "8.6.1")
    images = tmp_path / "calib"
    images.mkdir()
    for name in ("page.png", "coffee.png", "quokka.jpg"):
        shutil.copy(IMAGES / name, images / name)
    cache = tmp_path / "calib.cache"
    header = plan_header(
        build_engine(ppocr.model, BuildOptions(precision="int8", calib_images=images, calib_cache=cache), ppocr.input)
    )
    assert header["flags"] == ["FP16", "INT8"]
    opt = header["profile"]["x"][1]
    at_opt = Preprocessor(dataclasses.replace(ppocr.input, size=(opt[2], opt[3])))
    expected = [
        float(at_opt(*read_image(images / name))[0].astype(np.float64).sum())
        for name in ("coffee.png", "page.png", "quokka.jpg")
    ]
    np.testing.assert_allclose(header["calibration_sums"], expected, rtol=1e-6)
    assert cache.read_bytes() == b"FAKECALIBRATION:3"
    again = plan_header(build_engine(ppocr.model, BuildOptions(precision="int8", calib_cache=cache), ppocr.input))
    assert again["flags"] == ["FP16", "INT8"] and again["calibration_sums"] == []


def test_int8_option_errors(monkeypatch: pytest.MonkeyPatch, selfie: ModelSpec, tmp_path: Path) -> None:
    install(monkeypatch, "10.3.0")
    with pytest.raises(EngineBuildError, match="--precision int8 needs --calib-images"):
        BuildOptions(precision="int8")
    with pytest.raises(EngineBuildError, match="--calib-images .*: no .png/.jpg images"):
        build_engine(selfie.model, BuildOptions(precision="int8", calib_images=tmp_path), selfie.input)
    with pytest.raises(EngineBuildError, match="--calib-cache .*missing.cache: no such file"):
        build_engine(selfie.model, BuildOptions(precision="int8", calib_cache=tmp_path / "missing.cache"), selfie.input)


def unknown_op_model(path: Path) -> Path:
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["input"], ["hidden"], name="activation"),
            helper.make_node("NotARealOp", ["hidden"], ["output"], name="mystery_node"),
        ],
        "unknown_op",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


@pytest.mark.parametrize("version", ["8.5.2.2", "10.3.0"])
def test_parser_errors_name_the_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str) -> None:
    install(monkeypatch, version)  # 8.5 errors carry only the node index; 10 adds name and operator
    model = unknown_op_model(tmp_path / "unknown.onnx")
    with pytest.raises(
        EngineBuildError,
        match=r"cannot parse .*unknown.onnx:\n  node 1 'mystery_node' \(NotARealOp\): "
        r"No importer registered for op: NotARealOp",
    ):
        build_engine(model, BuildOptions(), None)


def test_dla_core(monkeypatch: pytest.MonkeyPatch, selfie: ModelSpec) -> None:
    trt = install(monkeypatch, "8.5.2.2")
    with pytest.raises(EngineBuildError, match="--dla-core: DLA runs FP16 or INT8 only"):
        BuildOptions(dla_core=0)
    with pytest.raises(EngineBuildError, match="--dla-core 0: this device has 0 DLA core"):
        build_engine(selfie.model, BuildOptions(precision="fp16", dla_core=0), selfie.input)
    monkeypatch.setattr(trt.Builder, "num_DLA_cores", 2)
    header = plan_header(build_engine(selfie.model, BuildOptions(precision="fp16", dla_core=1), selfie.input))
    assert header["dla_core"] == 1 and "GPU_FALLBACK" in header["flags"]


def test_timing_cache_is_written_and_reused(monkeypatch: pytest.MonkeyPatch, selfie: ModelSpec, tmp_path: Path) -> None:
    install(monkeypatch, "10.3.0")
    timing = tmp_path / "timing.cache"
    first = plan_header(build_engine(selfie.model, BuildOptions(timing_cache=timing), selfie.input))
    assert first["timing_cache_entries_before"] == 0 and timing.is_file()
    second = plan_header(build_engine(selfie.model, BuildOptions(timing_cache=timing), selfie.input))
    assert second["timing_cache_entries_before"] == 1


def test_missing_onnx_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch, "10.3.0")
    with pytest.raises(EngineBuildError, match="ONNX model not found: .*nothing.onnx"):
        build_engine(tmp_path / "nothing.onnx", BuildOptions(), None)


def test_engine_built_on_each_version_runs(monkeypatch: pytest.MonkeyPatch, selfie: ModelSpec, tmp_path: Path) -> None:
    from trt_perception.tensorrt.backend import TensorRTBackend

    frame = np.linspace(0, 1, 256 * 256 * 3, dtype=np.float32).reshape(1, 256, 256, 3)
    results = []
    for version in ("8.5.2.2", "10.3.0", "11.4.0"):
        trt: types.ModuleType = install(monkeypatch, version)
        assert trt.__version__ == version
        backend = TensorRTBackend(build_engine_file(tmp_path, selfie, name=f"{version}.engine"))
        results.append(backend.infer({"input_1": frame})["activation_10"])
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
