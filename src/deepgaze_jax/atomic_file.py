"""Writing a text file so that no reader ever sees it half-written."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file beside it, so ``path`` is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, newline="")
    os.replace(tmp, path)
