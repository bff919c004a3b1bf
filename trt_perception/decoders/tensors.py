"""Finding and checking model output tensors; every error names the tensor."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from trt_perception.errors import InferenceError, SpecError
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


Shape = tuple[int | None, ...]


def describe_outputs(shapes: Mapping[str, Shape]) -> str:
    """The model's outputs as ``name [d0,d1,...]`` (``?`` for a dynamic dimension), for messages."""
    listed = (f"{name} [{','.join('?' if d is None else str(d) for d in shape)}]" for name, shape in shapes.items())
    return ", ".join(listed) or "none"


def declared_output(shapes: Mapping[str, Shape], name: str | None, param: str) -> tuple[str, Shape]:
    """Name and declared shape of the output ``name`` (None: the model's only output), checked before the
    first frame; raises ``SpecError`` naming ``param`` and the model's actual outputs."""
    if name is None:
        if len(shapes) != 1:
            raise SpecError(
                f"{param} is not set and the model has {len(shapes)} outputs; "
                f"set it to one of: {describe_outputs(shapes)}"
            )
        name = next(iter(shapes))
    elif name not in shapes:
        raise SpecError(f"{param}: the model has no output {name!r}; its outputs: {describe_outputs(shapes)}")
    return name, shapes[name]


def shape_mismatch(param: str, name: str, shape: Shape, expected: str, shapes: Mapping[str, Shape]) -> SpecError:
    """The error for an output whose declared shape cannot be what ``param`` expects."""
    shown = ",".join("?" if d is None else str(d) for d in shape)
    return SpecError(
        f"{param}: the model output {name!r} has shape [{shown}]; expected {expected} "
        f"(model outputs: {describe_outputs(shapes)})"
    )


def dims_agree(dim: int | None, expected: int | None) -> bool:
    """Whether a declared dimension (None: dynamic) can equal ``expected`` (None: anything)."""
    return dim is None or expected is None or dim == expected
