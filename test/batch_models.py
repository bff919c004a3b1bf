"""A batched copy of the bundled selfie segmentation model, for the multi-camera tests and bench.

The MediaPipe export fixes the batch dimension at 1: its input and output say ``[1, ...]`` and its
squeeze-and-excite ``Reshape`` nodes carry the constant target ``[1, C, 1, 1]``. The copy names the
batch dimension ``N`` (or fixes it at a given size) and lets those reshapes copy the batch dimension
from their input (target dimension 0), which leaves every other computation as it was.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import numpy_helper

SELFIE_MODEL = Path(__file__).resolve().parent / "fixtures" / "models" / "selfie_segmentation.onnx"


def batched_selfie_model(path: Path, batch: int | None = None) -> Path:
    """Write the selfie model with batch dimension ``batch`` (``None``: dynamic) to ``path``."""
    model = onnx.load(str(SELFIE_MODEL))
    for value in [*model.graph.input, *model.graph.output]:
        dimension = value.type.tensor_type.shape.dim[0]
        if batch is None:
            dimension.dim_param = "N"
        else:
            dimension.dim_value = batch
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in model.graph.node:
        target = initializers.get(node.input[1]) if node.op_type == "Reshape" else None
        if target is None:
            continue
        shape = numpy_helper.to_array(target).copy()
        if shape.ndim == 1 and len(shape) >= 2 and shape[0] == 1:
            shape[0] = 0  # copy the batch dimension from the input
            target.CopyFrom(numpy_helper.from_array(shape, target.name))
    del model.graph.value_info[:]  # intermediate shapes recorded for batch 1
    onnx.save(model, str(path))
    return path
