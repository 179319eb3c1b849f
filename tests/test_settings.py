"""Every DEEPGAZE_JAX_* variable is read through `settings`, when used, and listed in the README."""

import re
from pathlib import Path

import pytest

from deepgaze_jax import settings

SRC = Path(settings.__file__).parent
README = SRC.parents[1] / "README.md"


def test_only_settings_reads_the_environment():
    for path in SRC.rglob("*.py"):
        if path.name != "settings.py":
            text = path.read_text()
            assert "os.environ" not in text and "getenv" not in text, f"{path}: read it through deepgaze_jax.settings"
            assert not re.search(r"[\"']DEEPGAZE_JAX_", text), f"{path}: name the variable through deepgaze_jax.settings"


def test_the_readme_table_lists_every_variable():
    table = README.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    assert sorted(re.findall(r"^\| `(DEEPGAZE_JAX_[A-Z0-9_]+)`", table, re.M)) == sorted(settings.VARIABLES)


def test_values_are_read_at_use(monkeypatch, tmp_path):
    monkeypatch.setenv(settings.CACHE, str(tmp_path))
    assert settings.cache_dir() == tmp_path
    monkeypatch.setenv(settings.CACHE, "")
    assert settings.cache_dir() == Path.home() / ".cache" / "deepgaze_jax"
    for value, enabled in (("0", False), (" Off ", False), ("1", True), ("", True)):
        monkeypatch.setenv(settings.XLA_CPU_YNN, value)
        assert settings.ynn_enabled() is enabled


def test_an_unknown_variable_of_ours_is_an_error_and_others_pass_through(monkeypatch):
    with pytest.raises(KeyError, match="not a deepgaze-jax setting"):
        settings.get("DEEPGAZE_JAX_TYPO")
    monkeypatch.setenv("SOMEONE_ELSES", "x")
    assert settings.get("SOMEONE_ELSES") == "x"
