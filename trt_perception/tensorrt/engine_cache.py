"""Build TensorRT engines once and reuse them, rebuilding stale ones instead of failing.

An engine is only valid for the ONNX model, TensorRT version, GPU, precision, input shapes and (INT8)
calibration inputs it was built for. The cache stores ``<model>-<precision>-<digest>.engine`` (the
digest covers the model file's absolute path, the shape request and the DLA core, so equally named
models in different folders get their own engines) with a JSON sidecar holding that key; an engine
whose sidecar key differs from the current one (new TensorRT after an upgrade, another GPU, an edited
model, other calibration images) or that no longer loads is rebuilt in place. A file lock
(``fcntl.flock``) per engine file is held while the key is checked and the engine built and loaded, so
a second process waits for the first one's build and then loads its result.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from trt_perception.errors import ModelLoadError
from trt_perception.tensorrt.calibrator import calibration_stamp
from trt_perception.tensorrt.engine_builder import BuildOptions, build_engine
from trt_perception.tensorrt.runtime_support import current_gpu, require_tensorrt

if TYPE_CHECKING:
    from trt_perception.spec import InputSpec

LOG = logging.getLogger(__name__)

CACHE_DIR_ENV = "TRT_PERCEPTION_ENGINE_CACHE"
LOCK_WAIT_S = 3600.0  # a large engine on a Jetson can take many minutes to build

T = TypeVar("T")


def default_cache_dir() -> Path:
    """``$TRT_PERCEPTION_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/trt_perception/engines`` (``~/.cache``)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "trt_perception" / "engines"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise ModelLoadError(f"cannot read ONNX model {path}: {error.strerror or error}") from error
    return digest.hexdigest()


def shape_request(options: BuildOptions, input_spec: InputSpec | None) -> dict[str, Any]:
    """What decides the engine's input shapes: explicit ranges and the spec's image input rule."""
    request: dict[str, Any] = {
        "explicit": {name: shape_range.as_lists() for name, shape_range in sorted(options.shapes.items())}
    }
    if input_spec is not None:
        size = input_spec.size
        request["image_input"] = {
            "name": input_spec.name,
            "layout": input_spec.layout,
            "size": list(size) if isinstance(size, tuple) else asdict(size),
        }
    return request


def calibration_request(options: BuildOptions, input_spec: InputSpec | None) -> dict[str, Any] | None:
    """What INT8 calibration reads (``calibration_stamp``); ``None`` for fp32 and fp16."""
    if options.precision != "int8":
        return None
    return calibration_stamp(options.calib_images, options.calib_cache, input_spec)


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine is specific to."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    shapes: dict[str, Any]
    dla_core: int | None
    calibration: dict[str, Any] | None = None

    @classmethod
    def current(cls, onnx_path: Path, options: BuildOptions, input_spec: InputSpec | None) -> EngineKey:
        """The key of an engine built here and now from ``onnx_path`` with ``options``."""
        require_tensorrt()
        import tensorrt as trt

        gpu = current_gpu()
        return cls(
            onnx_sha256=file_sha256(onnx_path),
            tensorrt_version=trt.__version__,
            gpu_name=gpu.name,
            compute_capability=gpu.compute_capability,
            precision=options.precision,
            shapes=shape_request(options, input_spec),
            dla_core=options.dla_core,
            calibration=calibration_request(options, input_spec),
        )

    def after_build(self, options: BuildOptions, input_spec: InputSpec | None) -> EngineKey:
        """This key with the calibration inputs as the build left them (it writes the calibration cache)."""
        return replace(self, calibration=calibration_request(options, input_spec))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, other: dict[str, Any]) -> list[str]:
        """Fields in which a stored key differs from this one, as ``field: stored -> current``."""
        return [
            f"{name}: {other.get(name)!r} -> {value!r}"
            for name, value in self.as_json().items()
            if json.dumps(other.get(name), sort_keys=True) != json.dumps(value, sort_keys=True)
        ]


@contextmanager
def file_lock(path: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; wait (polling) up to ``wait_s`` seconds for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline = time.monotonic() + wait_s
        announced = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    LOG.info("waiting for another process to finish building or loading %s", path.with_suffix(""))
                    announced = True
                if time.monotonic() > deadline:
                    raise ModelLoadError(
                        f"gave up after {wait_s:.0f} s waiting for the engine build lock {path}"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class EngineCache:
    """Engines built from ONNX models, keyed and locked (see the module docstring)."""

    def __init__(self, directory: Path | None = None, lock_wait_s: float = LOCK_WAIT_S) -> None:
        self.directory = directory or default_cache_dir()
        self.lock_wait_s = lock_wait_s

    def engine_path(self, onnx_path: Path, options: BuildOptions, input_spec: InputSpec | None) -> Path:
        """Where the engine lives (its sidecar has ``.json`` added): model name, precision and a digest of
        the model's absolute path, the shape request and the DLA core."""
        variant = [str(onnx_path.resolve()), shape_request(options, input_spec), options.dla_core]
        digest = hashlib.sha256(json.dumps(variant, sort_keys=True).encode()).hexdigest()[:12]
        return self.directory / f"{onnx_path.stem}-{options.precision}-{digest}.engine"

    def get_or_build(
        self,
        onnx_path: Path,
        options: BuildOptions,
        input_spec: InputSpec | None,
        load: Callable[[Path], T],
    ) -> T:
        """Load the cached engine for this model and options, building it first when needed.

        The key is taken and the engine checked, built and loaded under the lock, so no other process
        replaces the engine file in between. A cache directory this process cannot write to (engines
        provisioned into a read-only image) cannot change and cannot take a lock file: its engine is
        loaded without the lock when current, else that is an error."""
        engine_path = self.engine_path(onnx_path, options, input_spec)
        if self.directory.is_dir() and not os.access(self.directory, os.W_OK):
            reason = self.stale_reason(EngineKey.current(onnx_path, options, input_spec), engine_path)
            if reason is not None:
                raise ModelLoadError(f"engine cache {self.directory} is read-only; {engine_path.name}: {reason}")
            return load(engine_path)
        with file_lock(engine_path.with_name(engine_path.name + ".lock"), self.lock_wait_s):
            key = EngineKey.current(onnx_path, options, input_spec)
            loaded = self._load_if_current(key, engine_path, load)
            if loaded is None:
                self._build(key, onnx_path, options, input_spec, engine_path)
                loaded = load(engine_path)
        return loaded

    def build(self, onnx_path: Path, options: BuildOptions, input_spec: InputSpec | None, force: bool = False) -> Path:
        """Make sure the cache holds a current engine (provisioning); return its path."""
        engine_path = self.engine_path(onnx_path, options, input_spec)
        with file_lock(engine_path.with_name(engine_path.name + ".lock"), self.lock_wait_s):
            key = EngineKey.current(onnx_path, options, input_spec)
            if force or self.stale_reason(key, engine_path) is not None:
                self._build(key, onnx_path, options, input_spec, engine_path)
        return engine_path

    @staticmethod
    def stale_reason(key: EngineKey, engine_path: Path) -> str | None:
        """Why the engine at ``engine_path`` cannot serve ``key`` (``None``: it is current)."""
        sidecar = engine_path.with_name(engine_path.name + ".json")
        if not engine_path.is_file() or not sidecar.is_file():
            return "not built yet"
        try:
            stored = json.loads(sidecar.read_text(encoding="utf-8"))["key"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"unreadable sidecar {sidecar}"
        differences = key.differences(stored)
        return "; ".join(differences) if differences else None

    def _load_if_current(self, key: EngineKey, engine_path: Path, load: Callable[[Path], T]) -> T | None:
        reason = self.stale_reason(key, engine_path)
        if reason is not None:
            if reason != "not built yet":
                LOG.warning("engine %s is stale (%s); rebuilding it", engine_path, reason)
            return None
        try:
            return load(engine_path)
        except ModelLoadError as error:
            LOG.warning("cached engine %s does not load (%s); rebuilding it", engine_path, error)
            return None

    def _build(
        self, key: EngineKey, onnx_path: Path, options: BuildOptions, input_spec: InputSpec | None, engine_path: Path
    ) -> None:
        LOG.warning("building TensorRT engine %s from %s (this can take minutes)", engine_path, onnx_path)
        build_engine_file(engine_path, onnx_path, options, input_spec, key)


def build_engine_file(
    engine_path: Path, onnx_path: Path, options: BuildOptions, input_spec: InputSpec | None,
    key: EngineKey | None = None,
) -> None:
    """Build the engine and write it with its sidecar (``store_engine``). ``key`` (default: the current
    one, taken before the build) is stored with the calibration inputs as the build left them (an INT8
    build may write the calibration cache)."""
    key = key or EngineKey.current(onnx_path, options, input_spec)
    started = time.monotonic()
    plan = build_engine(onnx_path, options, input_spec)
    built_seconds = time.monotonic() - started
    store_engine(engine_path, plan, key.after_build(options, input_spec), onnx_path, built_seconds, options)


def store_engine(
    engine_path: Path, plan: bytes, key: EngineKey, onnx_path: Path, build_seconds: float, options: BuildOptions
) -> None:
    """Write an engine and its JSON sidecar (``<engine>.json``), each atomically, engine first."""
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(engine_path, plan)
    sidecar = {
        "key": key.as_json(),
        "onnx": str(onnx_path),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(build_seconds, 3),
        "workspace_mib": options.workspace_mib,
    }
    _write_atomically(engine_path.with_name(engine_path.name + ".json"), json.dumps(sidecar, indent=2).encode())
