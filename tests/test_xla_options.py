"""`xla_options.jit`: compiler options at top level, plain tracing when nested, an off switch."""

import importlib.metadata

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepgaze_jax import xla_options
from deepgaze_jax.model import log_density_grid


def _readout(w, x):
    return jax.nn.relu(jnp.einsum("hwc,cd->hwd", x, w)).sum()


def test_options_follow_the_jaxlib_version_and_the_off_switch(monkeypatch):
    monkeypatch.delenv(xla_options.OFF_SWITCH, raising=False)
    measured = importlib.metadata.version("jaxlib").startswith(xla_options.MEASURED_JAXLIB)
    expected = {xla_options.YNN_OPTION: xla_options.YNN_VALUE} if measured else {}
    assert xla_options.compiler_options() == expected
    monkeypatch.setattr(xla_options, "jaxlib_version", lambda: "99.0.0")
    assert xla_options.compiler_options() == {}
    monkeypatch.setattr(xla_options, "jaxlib_version", lambda: None)
    assert xla_options.compiler_options() == {}
    monkeypatch.undo()
    for off in ("0", "off", "False"):
        monkeypatch.setenv(xla_options.OFF_SWITCH, off)
        assert xla_options.compiler_options() == {}


def test_jaxlib_version_is_looked_up_once(monkeypatch):
    xla_options.jaxlib_version.cache_clear()
    calls = []
    monkeypatch.setattr(importlib.metadata, "version", lambda name: calls.append(name) or "0.10.2")
    try:
        assert [xla_options.jaxlib_version() for _ in range(3)] == ["0.10.2"] * 3 and calls == ["jaxlib"]
    finally:
        xla_options.jaxlib_version.cache_clear()  # the real version again for the tests after this one


def test_top_level_call_compiles_with_the_options_and_matches_plain_jit():
    fast = xla_options.jit(_readout)
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((64, 32), np.float32), rng.standard_normal((24, 32, 64), np.float32)
    if xla_options.compiler_options():
        text = fast.lower(w, x).compile().as_text()
        assert "ynn" in text.lower(), "the YNNPACK option did not reach XLA"
    np.testing.assert_allclose(fast(w, x), jax.jit(_readout)(w, x), rtol=1e-5)


def test_nested_inside_a_users_jit_vmap_and_grad():
    fast = xla_options.jit(_readout)
    rng = np.random.default_rng(1)
    w, x = rng.standard_normal((8, 4), np.float32), rng.standard_normal((3, 5, 6, 8), np.float32)
    plain = jax.vmap(_readout, in_axes=(None, 0))(w, x)
    np.testing.assert_allclose(jax.jit(jax.vmap(fast, in_axes=(None, 0)))(w, x), plain, rtol=1e-5)
    np.testing.assert_allclose(jax.grad(fast)(w, x[0]), jax.grad(_readout)(w, x[0]), rtol=1e-5)
    # arguments closed over, so no tracer among them: the call still happens inside a trace
    np.testing.assert_allclose(jax.jit(lambda: fast(w, x[0]))(), plain[0], rtol=1e-5)


def test_the_off_switch_is_read_at_call_time_not_when_wrapping(monkeypatch):
    monkeypatch.delenv(xla_options.OFF_SWITCH, raising=False)
    if not xla_options.compiler_options():
        pytest.skip("this jaxlib gets no YNNPACK option")
    monkeypatch.setattr(xla_options, "YNN_VALUE", "NOT_AN_XLA_VALUE")  # XLA refuses it: a call with the option fails
    fast = xla_options.jit(_readout)  # wrapped while the switch is on
    w, x = np.ones((8, 4), np.float32), np.ones((3, 5, 8), np.float32)
    monkeypatch.setenv(xla_options.OFF_SWITCH, "0")
    assert float(fast(w, x)) == pytest.approx(15.0 * 4 * 8)
    monkeypatch.delenv(xla_options.OFF_SWITCH)
    with pytest.raises(jax.errors.JaxRuntimeError, match="NOT_AN_XLA_VALUE"):
        fast(w, x)


def test_top_level_is_false_inside_any_trace():
    seen = []

    def probe(x):
        seen.append(xla_options.top_level())
        return x

    assert xla_options.top_level()
    jax.jit(lambda: probe(jnp.ones(2)))()
    jax.vmap(probe)(jnp.ones(3))
    jax.grad(lambda x: probe(x).sum())(jnp.ones(2))
    assert seen == [False, False, False]


def test_user_options_win_and_the_wrapper_keeps_the_name():
    fast = xla_options.jit(_readout, compiler_options={xla_options.YNN_OPTION: "LIBRARY_FUSION_TYPE_DOT"})
    assert fast.__name__ == "_readout"
    w, x = np.ones((4, 2), np.float32), np.ones((2, 3, 4), np.float32)
    assert float(fast(w, x)) == pytest.approx(24.0 * 2)


def test_log_density_grid_is_a_fast_jit():
    assert isinstance(log_density_grid, xla_options.FastJit)
