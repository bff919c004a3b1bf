"""Type-check the TensorRT code against the ``tensorrt-stubs`` package (TensorRT 10.x API).

Usage: ``python test/tensorrt_double/typecheck.py STUBS_DIR`` where STUBS_DIR holds the stubs
installed with ``pip install --no-deps --target STUBS_DIR tensorrt-stubs==10.13.0.35.1``.

The generated stubs (every release up to 10.13.0.35.1) contain a few ``def`` lines that are not
valid Python (a parameter named ``in``; a parameter without default after defaulted ones), which
stops mypy before it checks anything. This script copies the stubs to a temporary folder, repairs
exactly those lines (renaming ``in`` to ``in_``, dropping the defaults of such a signature), and
runs mypy on the TensorRT modules with ``MYPYPATH`` pointing at the copy. Exit status: mypy's.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKED = [
    "trt_perception/tensorrt",
    "trt_perception/cli/build.py",
    "trt_perception/cli/compare.py",
]
STUB_PACKAGES = ("tensorrt", "tensorrt_bindings")


def _parses(line: str) -> bool:
    try:
        ast.parse(line.strip() + " ...")
    except SyntaxError:
        return False
    return True


def repair_signature(line: str) -> str:
    """A ``def`` line made parseable: ``in`` renamed, and defaults dropped when out of order."""
    if _parses(line):
        return line
    line = re.sub(r"\bin:", "in_:", line)
    if _parses(line):
        return line
    return re.sub(r"\s*=\s*(None|True|False|-?\d+(\.\d+)?|\.\.\.|'[^']*'|\"[^\"]*\"|[\w.]+)(?=\s*[,)])", "", line)


def repair_stubs(source: Path, target: Path) -> int:
    """Copy the stub packages from ``source`` to ``target`` with broken signatures repaired."""
    repaired = 0
    for package in STUB_PACKAGES:
        shutil.copytree(source / package, target / package)
        for stub in (target / package).rglob("*.pyi"):
            lines = stub.read_text(encoding="utf-8").splitlines()
            fixed = [repair_signature(line) if line.lstrip().startswith("def ") else line for line in lines]
            repaired += sum(a != b for a, b in zip(lines, fixed))
            text = "\n".join(fixed) + "\n"
            ast.parse(text, filename=str(stub))  # fail loudly if a new kind of breakage appears
            stub.write_text(text, encoding="utf-8")
    return repaired


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (Path(argv[0]) / "tensorrt" / "__init__.pyi").is_file():
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        count = repair_stubs(Path(argv[0]), Path(folder))
        print(f"repaired {count} stub signatures", flush=True)
        cache = Path(tempfile.gettempdir()) / "trt_perception_mypy_cache"  # kept outside the work tree
        config = ["--config-file", str(REPO / "mypy.ini"), "--cache-dir", str(cache), "--follow-imports=silent"]
        command = [sys.executable, "-m", "mypy", *config, *CHECKED]
        return subprocess.call(command, cwd=REPO, env={**os.environ, "MYPYPATH": folder})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
