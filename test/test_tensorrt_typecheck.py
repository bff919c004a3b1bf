"""mypy over ``trt_perception/tensorrt/`` and the build/compare CLIs against the ``tensorrt-stubs`` API (TensorRT 10).

Needs the stubs in a folder of their own (see mypy.ini): ``TENSORRT_STUBS_DIR`` or ``<venv>/tensorrt-stubs``,
where ``scripts/setup_env.sh`` installs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STUBS = Path(os.environ.get("TENSORRT_STUBS_DIR", Path(sys.prefix) / "tensorrt-stubs"))


def test_tensorrt_code_type_checks_against_the_stubs() -> None:
    assert (STUBS / "tensorrt" / "__init__.pyi").is_file(), (
        f"tensorrt-stubs missing: run scripts/setup_env.sh or "
        f"`pip install --no-deps --target {STUBS} tensorrt-stubs==10.13.0.35.1`"
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "test" / "tensorrt_double" / "typecheck.py"), str(STUBS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 8 source files" in result.stdout
