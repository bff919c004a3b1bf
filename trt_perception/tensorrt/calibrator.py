"""INT8 calibration for the engine builder: an entropy calibrator fed with images of a folder,
each through the model spec's own preprocessing (TensorRT 10 and older; TensorRT 11 has no
calibrators)."""

from __future__ import annotations

import dataclasses
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
