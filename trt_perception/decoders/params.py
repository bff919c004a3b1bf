"""Typed, validated access to a decoder's parameters; every error names ``decoder.<key>``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

from trt_perception.errors import SpecError

_REQUIRED: Any = object()
# The most bytes a file a spec names beside its model (labels, anchors) may have: far above any real
# one, and what keeps a device or a runaway file from being read into memory.
MAX_DATA_FILE_BYTES = 64 << 20


def is_finite_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is an int or float (not a bool) that a float holds finitely: not NaN, not
    infinite, not an integer beyond float's range (``math.isfinite`` raises OverflowError on those)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def checked_data_file(path: Path, key: str, what: str) -> Path:
    """``path`` when it is a regular file of at most MAX_DATA_FILE_BYTES, else a SpecError naming
    ``key`` and ``what`` the file holds."""
    try:
        status = path.stat()
    except OSError as error:
        raise SpecError(f"{key}: cannot read {what} file {path}: {error.strerror or error}") from error
    if not path.is_file():
        raise SpecError(f"{key}: {what} file {path} is not a regular file")
    if status.st_size > MAX_DATA_FILE_BYTES:
        raise SpecError(f"{key}: {what} file {path} has {status.st_size} bytes, more than {MAX_DATA_FILE_BYTES}")
    return path


class DecoderParams:
    """Reads the keys of one config mapping and rejects keys nobody asked for.

    Each getter records its key; :meth:`finish` then raises a ``SpecError`` for any key left over,
    so misspelt parameters are reported instead of silently ignored.
    """

    def __init__(self, config: Any, prefix: str = "decoder", base_dir: Path | None = None) -> None:
        if not isinstance(config, Mapping):
            raise SpecError(f"{prefix}: expected a mapping, got {type(config).__name__}")
        self._config: Mapping[str, Any] = config
        self._prefix = prefix
        self._read: set[str] = set()
        self.base_dir = base_dir  # where relative file paths (e.g. an anchors file) resolve from

    def key(self, name: str) -> str:
        """The full name of a parameter for messages, e.g. ``decoder.threshold``."""
        return f"{self._prefix}.{name}"

    def value(self, name: str, default: Any = _REQUIRED) -> Any:
        """The raw value of a parameter, for shapes the typed getters do not cover."""
        self._read.add(name)
        if name in self._config:
            return self._config[name]
        if default is _REQUIRED:
            raise SpecError(f"{self.key(name)}: required parameter is missing")
        return default

    def string(self, name: str, default: Any = _REQUIRED, choices: Sequence[str] | None = None) -> str:
        """A string, optionally one of ``choices``."""
        value = self.value(name, default)
        if not isinstance(value, str):
            raise SpecError(f"{self.key(name)}: expected a string, got {value!r}")
        if choices is not None and value not in choices:
            raise SpecError(f"{self.key(name)}: {value!r} is not one of {', '.join(choices)}")
        return value

    def optional_string(self, name: str, default: str | None = None) -> str | None:
        """A string, or ``None`` when the key is absent or null."""
        value = self.value(name, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise SpecError(f"{self.key(name)}: expected a non-empty string or null, got {value!r}")
        return value

    def number(
        self,
        name: str,
        default: Any = _REQUIRED,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        """A finite real number within ``[minimum, maximum]`` (bounds optional)."""
        value = self.value(name, default)
        if not is_finite_number(value):
            raise SpecError(f"{self.key(name)}: expected a number, got {value!r}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise SpecError(
                f"{self.key(name)}: {value!r} is outside [{minimum if minimum is not None else '-inf'}, "
                f"{maximum if maximum is not None else 'inf'}]"
            )
        return float(value)

    def integer(self, name: str, default: Any = _REQUIRED, minimum: int | None = None) -> int:
        """An integer, at least ``minimum`` when given."""
        value = self.value(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{self.key(name)}: expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise SpecError(f"{self.key(name)}: {value} is less than {minimum}")
        return value

    def boolean(self, name: str, default: Any = _REQUIRED) -> bool:
        """``true`` or ``false``."""
        value = self.value(name, default)
        if not isinstance(value, bool):
            raise SpecError(f"{self.key(name)}: expected true or false, got {value!r}")
        return value

    def names(self) -> list[str]:
        """All keys present in the mapping, in order."""
        return list(self._config)

    def finish(self) -> None:
        """Raise ``SpecError`` naming the first key that no getter asked for."""
        for name in self._config:
            if name not in self._read:
                allowed = ", ".join(sorted(self._read)) or "none"
                raise SpecError(f"{self.key(name)}: unknown parameter (allowed: {allowed})")
