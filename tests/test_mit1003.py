"""MIT1003 discovery and reading (on a small MIT1003-like folder)."""

import pytest

from deepgaze_jax.data import mit1003
from synthetic import fixture_root


def test_find_mit1003_root(tmp_path, monkeypatch):
    root = fixture_root(tmp_path / "shared" / "datasets" / "mit1003")
    monkeypatch.delenv(mit1003.MIT1003_ENV, raising=False)
    nested = tmp_path / "checkout" / "sub"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert mit1003.find_mit1003_root() == root  # found beside the checkout, searching upward
    monkeypatch.setenv(mit1003.MIT1003_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere \(from \$DEEPGAZE_JAX_MIT1003\) lacks stimuli and"):
        mit1003.find_mit1003_root()
    assert mit1003.find_mit1003_root(root) == root  # an explicit root wins over the variable


def test_mit1003_reads_the_folder_with_its_observer_names(tmp_path):
    ds = mit1003.mit1003(fixture_root(tmp_path))
    assert ds.name == "MIT1003" and len(ds) == 3
    assert ds.fixations.subject_names == mit1003.MIT1003_SUBJECTS and len(ds.fixations) == 6
