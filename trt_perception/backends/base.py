"""The ``Backend`` interface: named tensors in, named tensors out.

A backend wraps one loaded model. Tensor metadata uses ``None`` for dynamic dimensions. ``infer``
takes host (numpy) arrays keyed by input name and returns arrays keyed by output name. Callers that
want to avoid allocations pass ``outputs``: preallocated arrays (e.g. from ``allocate_outputs``)
that the backend fills and returns instead of new ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (``None`` for a dynamic dimension) and numpy dtype of one model tensor."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    @property
    def is_dynamic(self) -> bool:
        """Whether any dimension is only known at run time."""
        return any(dim is None for dim in self.shape)


@runtime_checkable
class Backend(Protocol):
    """A loaded model that runs inference on named tensors."""

    name: str

    @property
    def inputs(self) -> list[TensorInfo]:
        """Input tensors in model order."""
        ...

    @property
    def outputs(self) -> list[TensorInfo]:
        """Output tensors in model order."""
        ...

    def infer(
        self,
        inputs: Mapping[str, npt.NDArray],
        outputs: Mapping[str, npt.NDArray] | None = None,
    ) -> dict[str, npt.NDArray]:
        """Run the model; fill and return ``outputs`` when given, else return new arrays."""
        ...

    def allocate_outputs(self, input_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, npt.NDArray]:
        """Host arrays for every output, for the given concrete input shapes, reusable by ``infer``."""
        ...

    def close(self) -> None:
        """Release the model and its buffers."""
        ...
