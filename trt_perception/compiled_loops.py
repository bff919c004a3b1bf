"""Optional compiled loops: where numba can be imported it compiles the per-pixel loops of
``decoders/upsampling_kernels.py`` and ``colour_kernels.py``; without it the same results come from
slower OpenCV and numpy passes. This module itself imports numba only when a loop is compiled."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any


def compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` compiled by numba (releasing the GIL), its machine code cached on disk where
    numba finds a writable place: next to the module or in the user's cache folder. A read-only
    install run by a user without a writable home has neither; numba then refuses to cache, and
    the loop is compiled anew in each process instead."""
    import numba

    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


def import_kernels(module: str, logger: str, without_numba: str) -> ModuleType | None:
    """The loop module ``module`` when numba can be imported, else None, with a warning on
    ``logger`` naming numba's reason (e.g. a numpy newer than it supports) and ``without_numba``,
    what runs instead."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        logging.getLogger(logger).warning(f"numba cannot be imported ({error}): {without_numba}")
        return None
