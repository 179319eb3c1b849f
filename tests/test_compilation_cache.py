"""`compilation_cache.enable`: the folder it picks, that it leaves JAX's own setting alone, and that programs land there."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from deepgaze_jax import compilation_cache, settings


@pytest.fixture
def no_cache_set():
    """JAX's cache folder unset for the test, restored after (the suite's own cache: conftest)."""
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


def test_a_folder_set_through_jax_is_kept(tmp_path):
    current = jax.config.jax_compilation_cache_dir
    assert current, "conftest sets the suite's cache"
    assert compilation_cache.enable(tmp_path) == Path(current)
    assert jax.config.jax_compilation_cache_dir == current


def test_the_setting_picks_the_folder_or_turns_it_off(no_cache_set, monkeypatch, tmp_path):
    monkeypatch.setenv(settings.COMPILATION_CACHE, "off")
    assert compilation_cache.enable() is None and jax.config.jax_compilation_cache_dir is None
    monkeypatch.setenv(settings.COMPILATION_CACHE, str(tmp_path / "mine"))
    assert compilation_cache.enable() == tmp_path / "mine"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == compilation_cache.MIN_COMPILE_S


def test_the_default_folder_is_under_the_weights_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(settings.COMPILATION_CACHE, raising=False)
    monkeypatch.setenv(settings.CACHE, str(tmp_path))
    assert settings.compilation_cache_dir() == tmp_path / "xla"


def test_a_command_writes_its_programs_and_a_second_run_reads_them(tmp_path):
    """A fresh process (the way the CLI and the experiments start) keeps a compiled program in the folder."""
    program = ("import jax, jax.numpy as jnp\n"
               "from deepgaze_jax import compilation_cache\n"
               "compilation_cache.MIN_COMPILE_S = 0.0\n"
               "compilation_cache.enable()\n"
               "print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).sum()))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env[settings.COMPILATION_CACHE] = str(tmp_path / "xla")
    outputs = [subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True).stdout
               for _ in range(2)]
    assert outputs[0] == outputs[1]
    assert any(path.name.startswith("jit__lambda") for path in (tmp_path / "xla").iterdir())
