"""The strong-Wolfe line search: it converges, satisfies the Wolfe conditions, and vmaps to K searches."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deepgaze_jax.linesearch import cubic_minimizer, _Point, scale_by_wolfe_linesearch


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def lbfgs(has_aux=False):
    return optax.chain(optax.scale_by_lbfgs(), optax.scale(-1.0), scale_by_wolfe_linesearch(has_aux=has_aux))


def run(x, iterations, fn=rosenbrock):
    tx = lbfgs()

    @jax.jit
    def step(x, state):
        value, grad = optax.value_and_grad_from_state(fn)(x, state=state)
        updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=fn)
        return optax.apply_updates(x, updates), state

    state = tx.init(x)
    values = []
    for _ in range(iterations):
        x, state = step(x, state)
        values.append(float(optax.tree_utils.tree_get(state, "value")))
    return x, state, values


def test_lbfgs_with_it_solves_rosenbrock_with_monotone_values():
    x, state, values = run(jnp.array([-1.2, 1.0, -0.5, 0.8], jnp.float32), 60)
    np.testing.assert_allclose(np.asarray(x), 1.0, atol=1e-3)
    assert all(b <= a for a, b in zip(values, values[1:]))  # every accepted step decreases the objective
    assert float(rosenbrock(x)) == pytest.approx(values[-1], abs=1e-6)  # the stored value is the value there


def test_the_accepted_step_satisfies_the_strong_wolfe_conditions():
    tx = scale_by_wolfe_linesearch(c1=1e-4, c2=0.9)
    x = jnp.array([-1.2, 1.0], jnp.float32)
    value, grad = jax.value_and_grad(rosenbrock)(x)
    direction = -grad
    updates, state = tx.update(direction, tx.init(x), x, value=value, grad=grad, value_fn=rosenbrock)
    step = float(state.step)
    assert step > 0 and int(state.num_linesearch_steps) >= 1
    phi = lambda a: rosenbrock(x + a * direction)  # noqa: E731
    slope0 = float(jnp.vdot(grad, direction))
    assert float(phi(step)) <= float(value) + 1e-4 * step * slope0
    assert abs(float(jax.grad(phi)(jnp.float32(step)))) <= 0.9 * abs(slope0) + 1e-5
    np.testing.assert_allclose(np.asarray(updates), step * np.asarray(direction), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.grad), np.asarray(jax.grad(rosenbrock)(x + updates)), rtol=1e-4)


def test_an_ascent_direction_is_replaced_by_the_negative_gradient():
    tx = scale_by_wolfe_linesearch()
    x = jnp.array([0.5, -0.3], jnp.float32)
    value, grad = jax.value_and_grad(rosenbrock)(x)
    updates, state = tx.update(grad, tx.init(x), x, value=value, grad=grad, value_fn=rosenbrock)
    assert float(jnp.vdot(updates, grad)) < 0
    assert float(state.value) < float(value)


def test_under_vmap_each_search_is_the_one_it_would_be_alone():
    starts = jnp.array([[-1.2, 1.0], [2.0, -1.0], [0.3, 0.3]], jnp.float32)
    tx = lbfgs()

    def step(x, state):
        value, grad = optax.value_and_grad_from_state(rosenbrock)(x, state=state)
        updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=rosenbrock)
        return optax.apply_updates(x, updates), state

    batched = jax.jit(jax.vmap(step))
    xs, states = starts, jax.vmap(tx.init)(starts)
    for _ in range(15):
        xs, states = batched(xs, states)
    for k in range(len(starts)):
        alone, _, _ = run(starts[k], 15)
        np.testing.assert_allclose(np.asarray(xs[k]), np.asarray(alone), rtol=1e-5, atol=1e-6)


def test_aux_is_kept_at_the_accepted_point():
    fn = lambda x: (jnp.sum((x - 2.0) ** 2), jnp.sum(x))  # noqa: E731
    tx = lbfgs(has_aux=True)
    x = jnp.zeros(3)
    state = tx.init(x)
    assert np.isnan(float(optax.tree_utils.tree_get(state, "aux")))
    value, grad = jax.value_and_grad(lambda p: fn(p)[0])(x)
    updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=fn)
    x = optax.apply_updates(x, updates)
    assert float(optax.tree_utils.tree_get(state, "aux")) == pytest.approx(float(jnp.sum(x)), rel=1e-6)


def test_a_nonfinite_objective_shrinks_the_step_instead_of_taking_it():
    fn = lambda x: jnp.where(jnp.abs(x[0]) > 1.0, jnp.nan, jnp.sum((x - 0.9) ** 2))  # noqa: E731
    tx = scale_by_wolfe_linesearch()
    x = jnp.zeros(2)
    value, grad = jax.value_and_grad(fn)(x)
    updates, state = tx.update(-100.0 * grad, tx.init(x), x, value=value, grad=grad, value_fn=fn)
    assert np.isfinite(float(state.value)) and float(state.value) < float(value)


def test_cubic_minimizer_finds_the_minimum_of_a_cubic_and_falls_back_to_bisection():
    f = lambda a: (a - 0.3) ** 2 * (a + 2.0)  # noqa: E731  minimum at 0.3 on [0, 1]
    df = jax.grad(f)
    point = lambda a: _Point(jnp.float32(a), f(jnp.float32(a)), df(jnp.float32(a)))  # noqa: E731
    assert float(cubic_minimizer(point(0.0), point(1.0))) == pytest.approx(0.3, abs=1e-4)
    flat = _Point(jnp.float32(1.0), jnp.float32(jnp.nan), jnp.float32(0.0))
    assert float(cubic_minimizer(point(0.0), flat)) == pytest.approx(0.5)
