"""Engine cache: build once, reuse, rebuild when stale, one builder at a time (TensorRT double)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tensorrt_double import build_engine_file, fake_cupy, install, unpack_plan, uses_real_cupy

from trt_perception.errors import ModelLoadError
from trt_perception.spec import ModelSpec, load_model_spec
from trt_perception.tensorrt import engine_cache
from trt_perception.tensorrt.backend import EngineMismatchError, TensorRTBackend, create_tensorrt_backend
from trt_perception.tensorrt.engine_builder import BuildOptions
from trt_perception.tensorrt.engine_cache import EngineCache

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def selfie() -> ModelSpec:
    return load_model_spec("selfie_segmentation")


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """ONNX paths of every engine build the cache starts."""
    started: list[Path] = []
    real_build = engine_cache.build_engine

    def counting_build(onnx_path: Path, *args: object) -> bytes:
        started.append(onnx_path)
        return real_build(onnx_path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_cache, "build_engine", counting_build)
    return started


def cached_backend(cache: EngineCache, spec: ModelSpec, options: BuildOptions | None = None) -> TensorRTBackend:
    assert spec.model is not None
    return cache.get_or_build(spec.model, options or BuildOptions(), spec.input, TensorRTBackend)


def test_built_once_then_reused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, selfie: ModelSpec, builds: list[Path]
) -> None:
    install(monkeypatch, "10.3.0")
    cache = EngineCache(tmp_path)
    first = cached_backend(cache, selfie)
    second = cached_backend(cache, selfie)
    assert len(builds) == 1 and first.engine_path == second.engine_path
    sidecar = json.loads(first.engine_path.with_name(first.engine_path.name + ".json").read_text())
    assert sidecar["key"]["tensorrt_version"] == "10.3.0"
    assert (
        sidecar["key"]["onnx_sha256"] == "5ae4238af80bae8183d6429c5d9f7cea37ba1678b505afe2583ec9bc446d0726"
    )  # MANIFEST.md


def test_rebuilt_after_tensorrt_upgrade(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, selfie: ModelSpec, builds: list[Path]
) -> None:
    install(monkeypatch, "10.3.0")
    cache = EngineCache(tmp_path)
    old_path = cached_backend(cache, selfie).engine_path
    install(monkeypatch, "10.4.0")
    backend = cached_backend(cache, selfie)
    assert len(builds) == 2 and backend.engine_path == old_path  # rebuilt in place, not left behind
    assert unpack_plan(old_path.read_bytes())[0]["trt_version"] == "10.4.0"


def test_rebuilt_for_another_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, selfie: ModelSpec, builds: list[Path]
) -> None:
    if uses_real_cupy():
        pytest.skip("needs a simulated GPU change")
    install(monkeypatch, "10.3.0")
    cache = EngineCache(tmp_path)
    cached_backend(cache, selfie)
    fake_cupy.device_properties.update({"name": b"Jetson AGX Orin", "major": 8, "minor": 7})
    cached_backend(cache, selfie)  # same compute capability, other GPU name: rebuilt
    fake_cupy.device_properties.update({"major": 9, "minor": 0})
    cached_backend(cache, selfie)
    assert len(builds) == 3


def test_precision_and_shapes_get_their_own_engines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, builds: list[Path]
) -> None:
    install(monkeypatch, "10.3.0")
    spec = load_model_spec("ppocrv4_det")
    cache = EngineCache(tmp_path)
    paths = {
        cached_backend(cache, spec).engine_path,
        cached_backend(cache, spec, BuildOptions(precision="fp16")).engine_path,
    }
    from trt_perception.tensorrt.engine_builder import ShapeRange

    small = ShapeRange((1, 3, 32, 32), (1, 3, 320, 320), (1, 3, 640, 640))
    paths.add(cached_backend(cache, spec, BuildOptions(shapes={"x": small})).engine_path)
    cached_backend(cache, spec, BuildOptions(precision="fp16"))
    assert len(paths) == 3 and len(builds) == 3


def test_edited_model_and_broken_engine_are_rebuilt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, selfie: ModelSpec, builds: list[Path]
) -> None:
    install(monkeypatch, "10.3.0")
    assert selfie.model is not None
    model = tmp_path / "model.onnx"
    model.write_bytes(selfie.model.read_bytes())
    cache = EngineCache(tmp_path / "cache")
    engine_path = cache.get_or_build(model, BuildOptions(), selfie.input, TensorRTBackend).engine_path
    engine_path.write_bytes(b"truncated")  # sidecar still current, engine unusable
    cache.get_or_build(model, BuildOptions(), selfie.input, TensorRTBackend)
    model.write_bytes(load_model_spec("centernet_mobilenetv3_coco").model.read_bytes())  # type: ignore[union-attr]
    backend = cache.get_or_build(model, BuildOptions(), None, TensorRTBackend)
    assert [info.name for info in backend.inputs] == ["tower_0/images:0"]
    assert len(builds) == 3


def test_equally_named_models_in_two_folders_keep_their_own_engines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, selfie: ModelSpec, builds: list[Path]
) -> None:
    import onnx

    install(monkeypatch, "10.3.0")
    assert selfie.model is not None
    model = onnx.load(str(selfie.model))
    for folder, note in (("a", "first"), ("b", "retrained")):
        (tmp_path / folder).mkdir()
        model.doc_string = note  # other bytes, same file name
        onnx.save(model, str(tmp_path / folder / "model.onnx"))
    cache = EngineCache(tmp_path / "cache")
    paths = [
        cache.get_or_build(tmp_path / folder / "model.onnx", BuildOptions(), selfie.input, TensorRTBackend).engine_path
        for folder in "abab"
    ]
    assert builds == [tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"]  # no rebuild on alternating use
    assert paths[0] == paths[2] != paths[1] == paths[3]


def test_engine_is_loaded_while_the_build_lock_is_held(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, selfie: ModelSpec
) -> None:
    import fcntl

    install(monkeypatch, "10.3.0")
    assert selfie.model is not None
    cache = EngineCache(tmp_path)
    lock = cache.engine_path(selfie.model, BuildOptions(), selfie.input).with_suffix(".engine.lock")
    locked_at_load = []

    def load_checking_the_lock(path: Path) -> TensorRTBackend:
        with lock.open("a+") as other:  # another open file: flock refuses it while the cache holds the lock
            try:
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked_at_load.append(False)
            except BlockingIOError:
                locked_at_load.append(True)
        return TensorRTBackend(path)

    for _ in range(2):  # built, then cached
        cache.get_or_build(selfie.model, BuildOptions(), selfie.input, load_checking_the_lock)
    assert locked_at_load == [True, True]


def test_read_only_cache_serves_current_engines_without_a_lock(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, selfie: ModelSpec, builds: list[Path]
) -> None:
    install(monkeypatch, "10.3.0")
    assert selfie.model is not None
    cache = EngineCache(tmp_path)
    cache.build(selfie.model, BuildOptions(), selfie.input)
    for lock in tmp_path.glob("*.lock"):
        lock.unlink()
    writable = os.access
    monkeypatch.setattr(  # a read-only mount (chmod does not stop root, who runs CI containers)
        engine_cache.os, "access", lambda path, mode: False if Path(path) == tmp_path else writable(path, mode)
    )
    backend = cache.get_or_build(selfie.model, BuildOptions(), selfie.input, TensorRTBackend)
    assert backend.engine_path.parent == tmp_path and not list(tmp_path.glob("*.lock")) and len(builds) == 1
    with pytest.raises(ModelLoadError, match=r"engine cache .* is read-only; selfie_segmentation-fp16-.*not built yet"):
        cache.get_or_build(selfie.model, BuildOptions(precision="fp16"), selfie.input, TensorRTBackend)


def test_int8_engine_follows_its_calibration_inputs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, selfie: ModelSpec, builds: list[Path]
) -> None:
    import dataclasses
    import shutil

    from trt_perception.spec import NormalizationSpec

    install(monkeypatch, "10.3.0")
    assert selfie.model is not None
    images = tmp_path / "calib"
    images.mkdir()
    shutil.copy(REPO / "test" / "fixtures" / "images" / "page.png", images / "page.png")
    cache = EngineCache(tmp_path / "cache")
    int8 = BuildOptions(precision="int8", calib_images=images)
    fp16 = BuildOptions(precision="fp16")

    def calibration_sums(input_spec: object = selfie.input) -> list[float]:
        backend = cache.get_or_build(selfie.model, int8, input_spec, TensorRTBackend)  # type: ignore[arg-type]
        return unpack_plan(backend.engine_path.read_bytes())[0]["calibration_sums"]

    first = calibration_sums()
    cache.get_or_build(selfie.model, fp16, selfie.input, TensorRTBackend)
    assert calibration_sums() == first and len(first) == 1 and len(builds) == 2  # both reused
    shutil.copy(REPO / "test" / "fixtures" / "images" / "coffee.png", images / "coffee.png")
    assert len(calibration_sums()) == 2 and len(builds) == 3  # another image: recalibrated
    cache.get_or_build(selfie.model, fp16, selfie.input, TensorRTBackend)
    assert len(builds) == 3  # fp16 does not calibrate: unaffected
    other_scale = dataclasses.replace(selfie.input, normalization=NormalizationSpec(type="symmetric"))
    assert calibration_sums(other_scale) != calibration_sums() and len(builds) == 5  # preprocessing counts too
    cache.get_or_build(selfie.model, fp16, other_scale, TensorRTBackend)
    assert len(builds) == 5

    with_cache = dataclasses.replace(int8, calib_cache=tmp_path / "calib.cache")
    cache = EngineCache(tmp_path / "second_cache")
    for _ in range(2):  # the first build writes the calibration cache; the engine stays current
        cache.get_or_build(selfie.model, with_cache, selfie.input, TensorRTBackend)
    assert len(builds) == 6 and (tmp_path / "calib.cache").is_file()
    (tmp_path / "calib.cache").write_bytes(b"FAKECALIBRATION:7")  # an existing cache is read instead of images
    backend = cache.get_or_build(selfie.model, with_cache, selfie.input, TensorRTBackend)
    assert len(builds) == 7 and unpack_plan(backend.engine_path.read_bytes())[0]["calibration_sums"] == []


def test_spec_engine_of_old_tensorrt_falls_back_to_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, selfie: ModelSpec, builds: list[Path]
) -> None:
    install(monkeypatch, "8.6.1")
    stale = build_engine_file(tmp_path, selfie, name="shipped.engine")
    install(monkeypatch, "10.3.0")
    monkeypatch.setenv("TRT_PERCEPTION_ENGINE_CACHE", str(tmp_path / "cache"))
    backend = create_tensorrt_backend(replace_engine(selfie, stale))
    assert backend.engine_path.parent == tmp_path / "cache" and len(builds) == 1
    backend = create_tensorrt_backend(replace_engine(selfie, tmp_path / "never_built.engine"))
    assert len(builds) == 1  # the cached engine serves the missing one too
    with pytest.raises(EngineMismatchError, match="another TensorRT version"):
        create_tensorrt_backend(replace_engine(selfie, stale, model=None))


def replace_engine(spec: ModelSpec, engine: Path, model: Path | str | None = "keep") -> ModelSpec:
    import dataclasses

    return dataclasses.replace(spec, engine=engine, model=spec.model if model == "keep" else model)


LOCK_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys, time
    logging.basicConfig(level=logging.INFO)
    sys.path[:0] = [{repo!r}, {test!r}]
    from tensorrt_double import fake_cupy, make_tensorrt
    sys.modules["tensorrt"] = make_tensorrt("10.3.0")
    sys.modules["cupy"] = fake_cupy
    from pathlib import Path
    from trt_perception.tensorrt import engine_cache
    from trt_perception.tensorrt.backend import TensorRTBackend
    from trt_perception.tensorrt.engine_builder import BuildOptions
    from trt_perception.spec import load_model_spec

    folder = Path({cache!r}).parent
    real_build = engine_cache.build_engine
    def slow_build(*args):
        with open({log!r}, "a") as log:
            log.write("build\\n")
        deadline = time.monotonic() + 60
        while len(list(folder.glob("arrived-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # build only once the other process is asking for the engine too
        time.sleep(0.5)
        return real_build(*args)
    engine_cache.build_engine = slow_build
    spec = load_model_spec("selfie_segmentation")
    (folder / f"arrived-{{os.getpid()}}").touch()
    cache = engine_cache.EngineCache(Path({cache!r}))
    backend = cache.get_or_build(spec.model, BuildOptions(), spec.input, TensorRTBackend)
    print(backend.engine_path, [info.shape for info in backend.outputs])
    """
)


def test_two_processes_build_once(tmp_path: Path) -> None:
    script = tmp_path / "node.py"
    log = tmp_path / "builds.log"
    script.write_text(
        LOCK_SCRIPT.format(repo=str(REPO), test=str(REPO / "test"), log=str(log), cache=str(tmp_path / "cache"))
    )
    env = {**os.environ, "TRT_DOUBLE_REAL_CUPY": "0"}
    nodes = [
        subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=120) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert log.read_text() == "build\n"
    assert outputs[0][0] == outputs[1][0] and "(1, 256, 256, 1)" in outputs[0][0]
    assert sum("waiting for another process" in stderr for _, stderr in outputs) == 1


def test_lock_wait_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    import fcntl

    lock = tmp_path / "model.engine.lock"
    with lock.open("a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with (
            pytest.raises(ModelLoadError, match="gave up after 0 s waiting for the engine build lock"),
            engine_cache.file_lock(lock, wait_s=0.3),
        ):
            pass


def test_cached_engine_outputs_match_a_direct_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, selfie: ModelSpec
) -> None:
    install(monkeypatch, "10.3.0")
    frame = np.linspace(0, 1, 256 * 256 * 3, dtype=np.float32).reshape(1, 256, 256, 3)
    cached = cached_backend(EngineCache(tmp_path / "cache"), selfie).infer({"input_1": frame})
    direct = TensorRTBackend(build_engine_file(tmp_path, selfie)).infer({"input_1": frame})
    np.testing.assert_array_equal(cached["activation_10"], direct["activation_10"])


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_spec_precision_builds_its_engine_through_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str
) -> None:
    import dataclasses
    import shutil

    install(monkeypatch, version)
    monkeypatch.setenv("TRT_PERCEPTION_ENGINE_CACHE", str(tmp_path / "cache"))
    spec = load_model_spec("ppocrv4_det")
    fp16 = create_tensorrt_backend(dataclasses.replace(spec, tensorrt=dataclasses.replace(spec.tensorrt, precision="fp16")))
    header, _ = unpack_plan(fp16.engine_path.read_bytes())
    sidecar = json.loads(fp16.engine_path.with_name(fp16.engine_path.name + ".json").read_text())
    assert header["flags"] == ["FP16"] and sidecar["key"]["precision"] == "fp16"
    images = tmp_path / "calib"
    images.mkdir()
    for name in ("page.png", "coffee.png"):
        shutil.copy(REPO / "test" / "fixtures" / "images" / name, images / name)
    int8_settings = dataclasses.replace(
        spec.tensorrt, precision="int8", calibration_images=images, calibration_cache=tmp_path / "calib.cache"
    )
    int8 = create_tensorrt_backend(dataclasses.replace(spec, tensorrt=int8_settings))
    header, _ = unpack_plan(int8.engine_path.read_bytes())
    assert header["flags"] == ["FP16", "INT8"] and len(header["calibration_sums"]) == 2
    assert (tmp_path / "calib.cache").is_file() and int8.engine_path != fp16.engine_path


def test_spec_precision_on_tensorrt_11_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import dataclasses

    install(monkeypatch, "11.0.0")
    monkeypatch.setenv("TRT_PERCEPTION_ENGINE_CACHE", str(tmp_path / "cache"))
    spec = load_model_spec("selfie_segmentation")
    from trt_perception.tensorrt.engine_builder import EngineBuildError

    with pytest.raises(EngineBuildError, match="--precision fp16: TensorRT 11.0.0 builds strongly typed"):
        create_tensorrt_backend(dataclasses.replace(spec, tensorrt=dataclasses.replace(spec.tensorrt, precision="fp16")))
