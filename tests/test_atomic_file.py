"""Atomic text writes: the whole text or the old file, never a part, and no temporary file left behind."""

from deepgaze_jax.atomic_file import write_atomic


def test_write_atomic_creates_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_atomic(path, "first\n")
    write_atomic(path, "second\r\n")
    assert path.read_bytes() == b"second\r\n"  # written as given, no newline translation
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]
