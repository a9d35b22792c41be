"""What the reference generators share: write a generated page, or check (``--check``) that it is current."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(out: Path, text: str, argv: list[str], script: str) -> int:
    """With ``--check`` in ``argv``: 1 (and a sentence) when ``out`` differs from ``text``; else write it."""
    if "--check" in argv:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is out of date: run .venv/bin/python docs/{script}", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    print(f"wrote {out}")
    return 0
