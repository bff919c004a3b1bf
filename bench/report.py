"""Put generated markdown into docs/performance.md between named markers, leaving the rest alone.

    python bench/report.py SECTION FILE     # replace section SECTION with the contents of FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def update_section(name: str, text: str, doc: Path = DOC) -> None:
    """Replace the text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` (appended when absent)."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    content = doc.read_text() if doc.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        content = content.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(content)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    update_section(sys.argv[1], Path(sys.argv[2]).read_text())
