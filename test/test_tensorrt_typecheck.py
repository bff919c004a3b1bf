"""mypy over the TensorRT backend, builder, cache and CLIs against the ``tensorrt-stubs`` API (TensorRT 10).

Needs the stubs in a folder of their own (see mypy.ini): ``TENSORRT_STUBS_DIR`` or ``.venv/tensorrt-stubs``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STUBS = Path(os.environ.get("TENSORRT_STUBS_DIR", REPO / ".venv" / "tensorrt-stubs"))


@pytest.mark.skipif(
    not (STUBS / "tensorrt" / "__init__.pyi").is_file() or importlib.util.find_spec("mypy") is None,
    reason=f"needs mypy and `pip install --no-deps --target {STUBS} tensorrt-stubs==10.13.0.35.1`",
)
def test_tensorrt_code_type_checks_against_the_stubs() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "test" / "tensorrt_double" / "typecheck.py"), str(STUBS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 5 source files" in result.stdout
