"""Sample positions and weights of OpenCV's resize, as lookup tables (numpy only, no GPU needed).

The GPU kernels read these tables instead of recomputing coordinates, so that the exact index math
of the GPU path is the math checked here on the CPU against ``cv2.resize``:

* ``INTER_LINEAR`` maps destination pixel ``d`` to source position ``(d + 0.5) * src / dst - 0.5``
  (half-pixel centres), computed in float32 as OpenCV does. Columns are clamped to the image (the
  weight of the missing neighbour becomes 0); rows are not clamped, only their indices are clipped,
  which matters for the fixed-point weights.
* For ``uint8`` images OpenCV uses 11-bit fixed-point weights (``fixed0/fixed1``) and the rounding
  of its SIMD path (the kernel's ``linear_u8``); floats use the float32 weights directly.
* A float map exactly twice the output's size both ways is not blended: OpenCV runs such an
  ``INTER_LINEAR`` resize as its ``INTER_AREA`` shortcut, the four source values summed and times
  0.25 (:func:`area_shortcut_sums_in_sequence`).
* Nearest-neighbour tables (``INTER_NEAREST``, and ``INTER_NEAREST_EXACT`` with pixel centres
  aligned, used for labels) are read off OpenCV itself (see :func:`nearest_indices`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.geometry import resize_map

FIXED_POINT_ONE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE (11 fractional bits)


@dataclass(frozen=True)
class LinearTaps:
    """For each destination index: the two source indices and their weights (float32 and fixed point)."""

    index0: npt.NDArray[np.int32]
    index1: npt.NDArray[np.int32]
    weight0: npt.NDArray[np.float32]
    weight1: npt.NDArray[np.float32]
    fixed0: npt.NDArray[np.int32]
    fixed1: npt.NDArray[np.int32]


def linear_taps(source_length: int, destination_length: int, clamp_to_edge: bool) -> LinearTaps:
    """Bilinear taps along one axis as ``cv2.resize(..., INTER_LINEAR)`` computes them.

    ``clamp_to_edge`` is OpenCV's treatment of columns (x); rows (y) use ``False``.
    """
    if source_length < 1 or destination_length < 1:
        raise ValueError(f"resize lengths must be positive, got {source_length} -> {destination_length}")
    scale = 1.0 / (destination_length / source_length)
    position = ((np.arange(destination_length, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    index0 = np.floor(position).astype(np.int64)
    fraction = (position - index0.astype(np.float32)).astype(np.float32)
    if clamp_to_edge:
        before = index0 < 0
        fraction[before] = 0
        index0[before] = 0
        after = index0 >= source_length - 1
        fraction[after] = 0
        index0[after] = source_length - 1
    index1 = np.clip(index0 + 1, 0, source_length - 1)
    index0 = np.clip(index0, 0, source_length - 1)
    weight0 = (np.float32(1) - fraction).astype(np.float32)
    weight1 = fraction
    scale_fixed = np.float32(FIXED_POINT_ONE)
    return LinearTaps(
        index0=index0.astype(np.int32),
        index1=index1.astype(np.int32),
        weight0=weight0,
        weight1=weight1,
        fixed0=np.rint(weight0 * scale_fixed).astype(np.int32),
        fixed1=np.rint(weight1 * scale_fixed).astype(np.int32),
    )



def nearest_indices(source_length: int, destination_length: int, exact: bool = False) -> npt.NDArray[np.int32]:
    """Source index per destination index for ``cv2.resize`` with ``INTER_NEAREST`` (``exact``:
    ``INTER_NEAREST_EXACT``), read off OpenCV itself by resizing an index ramp, so the table
    follows whatever fixed-point rounding the installed OpenCV uses."""
    if source_length < 1 or destination_length < 1:
        raise ValueError(f"resize lengths must be positive, got {source_length} -> {destination_length}")
    ramp = np.arange(source_length, dtype=np.float32)[None, :]  # exact integers up to 2**24
    flag = cv2.INTER_NEAREST_EXACT if exact else cv2.INTER_NEAREST
    return cv2.resize(ramp, (destination_length, 1), interpolation=flag)[0].astype(np.int32)


def area_shortcut_sums_in_sequence(channels: int, width: int) -> npt.NDArray[np.bool_]:
    """Per output column of OpenCV's 2x area shortcut (``resize_map`` of a float32 map of
    ``channels`` channels, exactly twice ``width`` columns and twice as many rows as the output):
    whether it sums the four source values in sequence, ``((s00 + s01) + s10) + s11``, or else in
    pairs, ``(s00 + s01) + (s10 + s11)``, before multiplying by 0.25. Its SIMD loop sums in pairs;
    its scalar loop (the channel counts the SIMD loop skips, and the columns past its last full
    vector) in sequence.

    Read off OpenCV itself, since the vector width and the vectorized channel counts depend on its
    build, with three probes (t = 2**-24): (1, t, t, t) sums to 1 in sequence and to 1 + 2t in pairs;
    (1, t, 0, t) and (1, -1, t, 0) would give 1 + 2t and 0 if OpenCV added the rows first, which no
    build known to this package does (RuntimeError then, as for any other result)."""
    small = np.float32(2.0**-24)
    corners = np.array([[1, small, small, small], [1, small, 0, small], [1, -1, small, 0]], np.float32)
    probe = np.empty((6, 2 * width, channels), np.float32)
    for index, (s00, s01, s10, s11) in enumerate(corners):
        probe[2 * index, 0::2], probe[2 * index, 1::2] = s00, s01
        probe[2 * index + 1, 0::2], probe[2 * index + 1, 1::2] = s10, s11
    result = resize_map(probe[:, :, 0] if channels == 1 else probe, (3, width), cv2.INTER_LINEAR).reshape(3, width, channels)
    quarter = np.float32(0.25)
    sequence = result[0] == quarter
    pairs = result[0] == quarter + np.float32(2.0**-25)
    across_first = (result[1] == quarter) & (result[2] == quarter * small)
    if not np.all((sequence | pairs) & across_first) or not np.all(sequence == sequence[:, :1]):
        raise RuntimeError(
            f"cv2.resize's 2x area shortcut ({channels} channels, {width} columns) summed in an order this package does not know"
        )
    return sequence[:, 0]
