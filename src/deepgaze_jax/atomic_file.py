"""Writing a file so that no reader ever sees it half-written.

Every writer goes through a temporary file beside the target, moved onto it (`os.replace`, atomic on one
file system) only once it is complete; on an error the temporary file is removed and the target is left
as it was.

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> target = Path(tempfile.mkdtemp()) / "a.npz"
>>> with atomic_path(target, suffix=".npz") as tmp:   # np.savez appends .npz to a name without it
...     np.savez(tmp, x=np.arange(3))
>>> np.load(target)["x"].tolist(), sorted(p.name for p in target.parent.iterdir())
([0, 1, 2], ['a.npz'])
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``path`` (ending in ``suffix``; its name unique to the process and thread) to
    write; on success moves it onto ``path``, on an error removes it, leaving ``path`` as it was. Creates ``path``'s
    folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` through `atomic_path`, so ``path`` is never half-written."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, newline="")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
