"""Box codings found in detector outputs, converted to ``xyxy`` network-input pixels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from trt_perception.gpu._cupy import array_module

# Coordinate order of each coding; "xywh" is the top-left corner plus width and height.
BOX_FORMATS: dict[str, tuple[str, str, str, str]] = {
    "xyxy": ("x1", "y1", "x2", "y2"),
    "yxyx": ("y1", "x1", "y2", "x2"),
    "cxcywh": ("cx", "cy", "w", "h"),
    "xywh": ("x1", "y1", "w", "h"),
}


def to_xyxy(
    boxes: npt.NDArray,
    box_format: str,
    normalized: bool,
    network_size: tuple[int, int],
) -> npt.NDArray[np.float32]:
    """Convert ``Nx4`` boxes in ``box_format`` to ``xyxy`` float32 pixels of the network input.

    ``normalized`` boxes are fractions of the network input's width and height. CuPy boxes give
    CuPy results.
    """
    xp = array_module(boxes)
    values = xp.asarray(boxes, dtype=xp.float32).reshape(-1, 4)
    a, b, c, d = values.T
    if box_format == "xyxy":
        out = xp.stack([a, b, c, d], axis=1)
    elif box_format == "yxyx":
        out = xp.stack([b, a, d, c], axis=1)
    elif box_format == "cxcywh":
        out = xp.stack([a - c / 2, b - d / 2, a + c / 2, b + d / 2], axis=1)
    elif box_format == "xywh":
        out = xp.stack([a, b, a + c, b + d], axis=1)
    else:
        raise ValueError(f"unknown box format {box_format!r}; expected one of {', '.join(BOX_FORMATS)}")
    if normalized:
        height, width = network_size
        out *= xp.asarray([width, height, width, height], dtype=xp.float32)
    return out
