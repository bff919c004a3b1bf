"""Finding and checking model output tensors; every error names the tensor."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from trt_perception.errors import InferenceError
from trt_perception.gpu._cupy import array_module


def select_output(
    outputs: Mapping[str, npt.NDArray], name: str | None, param: str
) -> tuple[str, npt.NDArray]:
    """The output called ``name``; with ``name`` None, the model's only output.

    ``param`` is the decoder parameter that names the tensor (e.g. ``decoder.output``), for messages.
    CuPy arrays stay on the device; anything else becomes a numpy array.
    """
    if name is None:
        if len(outputs) != 1:
            raise InferenceError(
                f"{param} is not set and the model has {len(outputs)} outputs "
                f"({', '.join(outputs) or 'none'}); set {param} to one of them"
            )
        name = next(iter(outputs))
    elif name not in outputs:
        raise InferenceError(
            f"model output '{name}' ({param}) not found; available outputs: {', '.join(outputs) or 'none'}"
        )
    tensor = outputs[name]
    return name, tensor if array_module(tensor) is not np else np.asarray(tensor)


def require_rank(name: str, array: npt.NDArray, ranks: tuple[int, ...], expected: str) -> None:
    """Raise unless ``array.ndim`` is one of ``ranks``; ``expected`` describes the accepted shapes."""
    if array.ndim not in ranks:
        raise InferenceError(f"output '{name}' has shape {list(array.shape)}; expected {expected}")


def finite_range(name: str, array: npt.NDArray) -> tuple[float, float]:
    """Minimum and maximum of a non-empty array; raise if it holds NaN or infinity."""
    xp = array_module(array)
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        bad = int(xp.count_nonzero(~xp.isfinite(array)))
        raise InferenceError(f"output '{name}' contains {bad} NaN or infinite values")
    return low, high


def require_finite(name: str, array: npt.NDArray) -> None:
    """Raise if a floating-point array holds NaN or infinity (empty and integer arrays pass)."""
    if array.size and np.issubdtype(array.dtype, np.floating):
        finite_range(name, array)


def single_channel_map(name: str, array: npt.NDArray) -> npt.NDArray:
    """Batch item 0 of a one-channel map ``[B,H,W]``, ``[B,1,H,W]`` or ``[B,H,W,1]``, as ``HxW``."""
    expected = "[B,H,W], [B,1,H,W] or [B,H,W,1]"
    require_rank(name, array, (3, 4), expected)
    if array.size == 0:
        raise InferenceError(f"output '{name}' is empty (shape {list(array.shape)})")
    if array.ndim == 3:
        return array[0]
    if array.shape[1] == 1:
        return array[0, 0]
    if array.shape[3] == 1:
        return array[0, :, :, 0]
    raise InferenceError(f"output '{name}' has shape {list(array.shape)}; expected one channel: {expected}")
