"""Exceptions raised by the inference core; each message names the offending thing."""


class TrtPerceptionError(Exception):
    """Base class of every error this package raises on purpose."""


class SpecError(TrtPerceptionError):
    """A model spec is invalid; the message names the bad key (e.g. ``input.size``)."""


class ModelLoadError(TrtPerceptionError):
    """A model or engine file is missing or cannot be loaded; the message names the path."""


class ImageDecodeError(TrtPerceptionError):
    """An input image cannot be interpreted (unknown encoding, truncated data, ...)."""


class InferenceError(TrtPerceptionError):
    """Inference failed or produced unusable outputs (wrong tensor name, rank, NaN, ...)."""


class GpuUnavailableError(TrtPerceptionError, ImportError):
    """The GPU path was asked for but CuPy is missing or sees no usable CUDA device."""
