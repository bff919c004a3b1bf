"""INT8 calibration for the engine builder: an entropy calibrator fed with images of a folder,
each through the model spec's own preprocessing (TensorRT 10 and older; TensorRT 11 has no
calibrators)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from trt_perception.image_files import collect_images, read_image
from trt_perception.preprocess import Preprocessor
from trt_perception.spec import DynamicSize
from trt_perception.tensorrt.runtime_support import EngineBuildError, import_cupy

if TYPE_CHECKING:
    import tensorrt as trt

    from trt_perception.spec import InputSpec


def calibration_images(folder: Path) -> list[Path]:
    """Image files (.png, .jpg) in ``folder`` and below, or an error naming the folder."""
    if not folder.is_dir():
        raise EngineBuildError(f"--calib-images {folder}: not a folder")
    images = collect_images([folder])
    if not images:
        raise EngineBuildError(f"--calib-images {folder}: no .png/.jpg images")
    return images


def calibration_stamp(images: Path | None, cache: Path | None, input_spec: InputSpec | None) -> dict[str, Any]:
    """What INT8 calibration reads, for the engine cache key.

    An existing calibration cache is read instead of calibrating (``read_calibration_cache``), so then
    only its bytes count; otherwise each image's relative path, size and modification time, and the
    spec's input settings that preprocess the images for the calibrator.
    """
    try:
        if cache is not None and cache.is_file():
            return {"cache_sha256": hashlib.sha256(cache.read_bytes()).hexdigest()}
        if images is None:
            return {}
        listing = [
            [path.relative_to(images).as_posix(), stat.st_size, stat.st_mtime_ns]
            for path in calibration_images(images)
            for stat in (path.stat(),)
        ]
    except OSError as error:
        raise EngineBuildError(f"cannot read calibration input {error.filename}: {error.strerror}") from error
    return {
        "images_sha256": _json_sha256(listing),
        "preprocessing_sha256": None if input_spec is None else _json_sha256(dataclasses.asdict(input_spec)),
    }


def _json_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def calibration_tensor(path: Path, preprocess: Callable[[npt.NDArray[np.uint8], str], Any]) -> npt.NDArray:
    """One calibration image through the model's preprocessing."""
    pixels, channel_order = read_image(path)
    tensor, _ = preprocess(pixels, channel_order)
    return np.ascontiguousarray(tensor)


def make_entropy_calibrator(
    images: Sequence[Path],
    preprocess: Callable[[npt.NDArray[np.uint8], str], Any],
    cache_path: Path | None,
) -> trt.IInt8EntropyCalibrator2:
    """An entropy calibrator feeding ``images`` one by one; reads and writes ``cache_path``."""
    import tensorrt as trt

    cupy = import_cupy()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pending = list(images)
            self.device: Any = None
            self.capacity = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int]:
            if not self.pending:
                return []
            tensor = calibration_tensor(self.pending.pop(0), preprocess)
            if tensor.nbytes > self.capacity:
                self.device, self.capacity = cupy.cuda.alloc(tensor.nbytes), tensor.nbytes
            runtime = cupy.cuda.runtime
            runtime.memcpy(self.device.ptr, tensor.ctypes.data, tensor.nbytes, runtime.memcpyHostToDevice)
            return [int(self.device.ptr)]

        def read_calibration_cache(self) -> bytes | None:  # None: no cache, calibrate
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()


def calibration_preprocessor(
    input_spec: InputSpec, opt_hw: tuple[int, int]
) -> Callable[[npt.NDArray[np.uint8], str], Any]:
    """The spec's preprocessing (its resize mode) at the profile's opt size (calibration batches need one shape)."""
    if isinstance(input_spec.size, DynamicSize):
        input_spec = dataclasses.replace(input_spec, size=opt_hw)
    return Preprocessor(input_spec)
