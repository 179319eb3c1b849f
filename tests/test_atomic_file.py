"""Atomic writes: the whole file or the old one, never a part, and no temporary file left behind."""

import numpy as np
import pytest

from deepgaze_jax.atomic_file import atomic_path, write_atomic, write_bytes_atomic


def test_write_atomic_creates_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_atomic(path, "first\n")
    write_atomic(path, "second\r\n")
    assert path.read_bytes() == b"second\r\n"  # written as given, no newline translation
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.npz"
    write_bytes_atomic(path, b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path, suffix=".npz") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_atomic_path_keeps_the_suffix_writers_append(tmp_path):
    with atomic_path(tmp_path / "a.npz", suffix=".npz") as tmp:
        assert tmp.name.endswith(".npz") and tmp.parent == tmp_path
        np.savez(tmp, x=np.arange(2))
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1]
