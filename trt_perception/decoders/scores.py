"""Score activations shared by the detection decoders, and the check that scores are probabilities."""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from trt_perception.decoders.params import DecoderParams
from trt_perception.decoders.tensors import finite_range
from trt_perception.errors import InferenceError
from trt_perception.gpu._cupy import array_module

SCORE_ACTIVATIONS = ("none", "sigmoid", "softmax")


def score_activation(params: DecoderParams, default: str = "none", choices: tuple[str, ...] = SCORE_ACTIVATIONS) -> str:
    """``decoder.score_activation``: how the model's score values become probabilities."""
    return params.string("score_activation", default, choices)


def sigmoid(values: Any) -> Any:
    """Logistic function in float32, without overflow warnings for large negative logits."""
    xp = array_module(values)
    x = xp.asarray(values, dtype=xp.float32)
    return 0.5 * (xp.tanh(0.5 * x) + 1.0)


def softmax(values: Any, axis: int = -1) -> Any:
    """Softmax over ``axis`` in float32."""
    xp = array_module(values)
    x = xp.asarray(values, dtype=xp.float32)
    exponentials = xp.exp(x - x.max(axis=axis, keepdims=True))
    return exponentials / exponentials.sum(axis=axis, keepdims=True)


def activate(values: Any, activation: str, axis: int = -1) -> Any:
    """``values`` after ``activation`` (none | sigmoid | softmax over ``axis``)."""
    if activation == "sigmoid":
        return sigmoid(values)
    if activation == "softmax":
        return softmax(values, axis)
    return values


def require_probabilities(name: str, scores: npt.NDArray, activation: str) -> None:
    """Raise unless every (finite) score lies in [0, 1]: scores outside are not probabilities, so the
    decoder reads the wrong tensor or column, or the spec's ``score_activation`` is wrong."""
    if not scores.size:
        return
    low, high = finite_range(name, scores)
    if low < 0.0 or high > 1.0:
        hint = (
            "set decoder.score_activation (sigmoid or softmax) if the model gives logits"
            if activation == "none"
            else "check that the decoder reads the score tensor and columns"
        )
        raise InferenceError(
            f"output '{name}' gives scores {low:.4g}..{high:.4g} after score_activation {activation}; "
            f"scores must be probabilities in [0, 1]: {hint}"
        )
