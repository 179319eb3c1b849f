"""A strong-Wolfe line search that evaluates the objective once per iteration, in pieces K models can share.

L-BFGS takes each step along its direction ``d`` with a step size ``a`` from a line search
on ``phi(a) = f(x + a d)``. This one follows Nocedal & Wright (Numerical Optimization, 2nd
ed., algorithms 3.5 and 3.6): grow the trial step until the minimum is bracketed, then
shrink the bracket by safeguarded cubic interpolation, until a step satisfies the strong
Wolfe conditions

    phi(a) <= phi(0) + c1 a phi'(0)        (sufficient decrease)
    |phi'(a)| <= c2 |phi'(0)|              (curvature).

Why not `optax.scale_by_zoom_linesearch`: its iterations branch (``lax.cond``) between
evaluating the objective for the bracketing and for the zoom phase; under ``jax.vmap`` a
branch on a per-model flag becomes a select that runs *both* sides. Here an iteration is
three pieces without branches: the trial step (`trial_params`), one evaluation of the
objective there, and the update of the bracket from its value and slope (`observe`, a few
scalar selects), from `begin_search` to `end_search`. `scale_by_wolfe_linesearch` runs
them in a ``lax.while_loop`` for one model (or under ``vmap``, where a model whose search
has ended waits for the others); `batched_training` drives the searches of K models from
the host and evaluates, in each round, only the models whose search goes on.

The transformation is the last link of an optax chain (as `optax.lbfgs` builds it):

>>> import jax.numpy as jnp, optax
>>> from deepgaze_jax.linesearch import scale_by_wolfe_linesearch
>>> f = lambda x: jnp.sum((x - 3.0) ** 2)
>>> tx = optax.chain(optax.scale_by_lbfgs(), optax.scale(-1.0), scale_by_wolfe_linesearch())
>>> x = jnp.zeros(2)
>>> state = tx.init(x)
>>> for _ in range(3):
...     value, grad = optax.value_and_grad_from_state(f)(x, state=state)
...     updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=f)
...     x = optax.apply_updates(x, updates)
>>> bool(jnp.allclose(x, 3.0, atol=1e-5))
True

The state stores the objective's ``value`` and ``grad`` at the accepted point (found by
`optax.value_and_grad_from_state` and `optax.tree_utils.tree_get`, so the next iteration
does not evaluate them again), the number of evaluations (``num_linesearch_steps``) and,
with ``has_aux``, the auxiliary output of ``value_fn`` there (``aux``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

BRACKET, ZOOM, DONE = 0, 1, 2
MAX_STEPS, C1, C2, INITIAL_STEP, MAX_STEP = 20, 1e-4, 0.9, 1.0, 1e3
"""The defaults of `scale_by_wolfe_linesearch`, which the pieces share (so that `batched_training`, which calls
them directly, searches exactly as `training.make_optimizer`'s chain does)."""


class WolfeLinesearchState(NamedTuple):
    """The line search's state between iterations of the optimiser.

    Attributes:
      value: () objective at the params after the last update (inf before the first).
      grad: its gradient (a params pytree).
      aux: () ``value_fn``'s auxiliary output there (NaN without ``has_aux``; the state has the same
        structure either way).
      step: () the step size accepted last.
      num_linesearch_steps: () int32 evaluations of the objective in the last search.
    """

    value: jnp.ndarray
    grad: Any
    aux: Any
    step: jnp.ndarray
    num_linesearch_steps: jnp.ndarray


class _Point(NamedTuple):
    """A point of the search: step ``a``, phi(a), phi'(a)."""

    a: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray


class Search(NamedTuple):
    """One line search in progress (`begin_search`, `observe`, `end_search`).

    Attributes:
      phase: () int32, BRACKET, ZOOM or DONE.
      count: () int32, evaluations so far.
      trial: () the step size to evaluate next.
      direction: the descent direction searched along (a params pytree).
      start: the point at step 0; prev, lo, hi: the bracketing phase's last point and the bracket.
      best: the lowest point with sufficient decrease so far (``start`` while there is none);
      best_grad, best_aux: the gradient and ``aux`` there.
    """

    phase: jnp.ndarray
    count: jnp.ndarray
    trial: jnp.ndarray
    direction: Any
    start: _Point
    prev: _Point
    lo: _Point
    hi: _Point
    best: _Point
    best_grad: Any
    best_aux: Any


def _dot(a, b) -> jnp.ndarray:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _where(condition, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(condition, x, y), a, b)


def cubic_minimizer(lo: _Point, hi: _Point) -> jnp.ndarray:
    """The minimiser of the cubic through (a, f, g) of ``lo`` and ``hi``, safeguarded to the middle
    80% of the interval (bisection where the cubic has no minimum there)."""
    d1 = lo.g + hi.g - 3.0 * (lo.f - hi.f) / (lo.a - hi.a)
    radicand = d1**2 - lo.g * hi.g
    d2 = jnp.sign(hi.a - lo.a) * jnp.sqrt(jnp.maximum(radicand, 0.0))
    a = hi.a - (hi.a - lo.a) * (hi.g + d2 - d1) / (hi.g - lo.g + 2.0 * d2)
    low, high = jnp.minimum(lo.a, hi.a), jnp.maximum(lo.a, hi.a)
    margin = 0.1 * (high - low)
    ok = (radicand >= 0) & jnp.isfinite(a) & (a > low + margin) & (a < high - margin)
    return jnp.where(ok, a, 0.5 * (lo.a + hi.a))


def _next_state(s: Search, t: _Point, c1: float, c2: float, max_step: float) -> Search:
    """The search after evaluating trial point ``t`` (algorithms 3.5 and 3.6, as selects)."""
    start = s.start
    armijo = jnp.isfinite(t.f) & (t.f <= start.f + c1 * t.a * start.g)
    curvature = jnp.abs(t.g) <= -c2 * start.g
    bracket, zoom = s.phase == BRACKET, s.phase == ZOOM
    # bracketing: the minimum lies between prev and t, or t is acceptable, or the step grows
    high_side = ~armijo | ((s.count > 0) & (t.f >= s.prev.f))
    to_zoom_lo_prev = bracket & high_side
    accept = (bracket & ~high_side & curvature) | (zoom & armijo & (t.f < s.lo.f) & curvature)
    to_zoom_lo_t = bracket & ~high_side & ~curvature & (t.g >= 0)
    grow = bracket & ~high_side & ~curvature & (t.g < 0)
    # zoom: t replaces hi (no decrease over lo) or becomes lo (hi moves to lo if t.g points past lo)
    zoom_hi = zoom & ~(armijo & (t.f < s.lo.f))
    zoom_lo = zoom & armijo & (t.f < s.lo.f) & ~curvature
    flip = zoom_lo & (t.g * (s.hi.a - s.lo.a) >= 0)
    lo = _where(to_zoom_lo_prev, s.prev, _where(to_zoom_lo_t | zoom_lo, t, s.lo))
    hi = _where(to_zoom_lo_prev, t, _where(to_zoom_lo_t, s.prev, _where(zoom_hi, t, _where(flip, s.lo, s.hi))))
    phase = jnp.where(accept, DONE, jnp.where(to_zoom_lo_prev | to_zoom_lo_t, ZOOM, s.phase))
    trial = jnp.where(grow, jnp.minimum(2.0 * t.a, max_step), cubic_minimizer(lo, hi))
    return s._replace(phase=phase, count=s.count + 1, trial=trial, prev=_where(bracket, t, s.prev), lo=lo, hi=hi)


def scale_by_wolfe_linesearch(
    max_steps: int = MAX_STEPS, c1: float = C1, c2: float = C2, initial_step: float = INITIAL_STEP,
    max_step: float = MAX_STEP, has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Scales the updates (a descent direction) by a step satisfying the strong Wolfe conditions.

    Args:
      max_steps: evaluations of the objective per search at most; when they run out, the lowest
        point with sufficient decrease is taken (no step if there is none).
      c1, c2: the sufficient-decrease and curvature constants (0 < c1 < c2 < 1).
      initial_step: the first trial step (1 for quasi-Newton directions).
      max_step: the bracketing phase doubles the trial step up to this.
      has_aux: ``value_fn`` returns ``(value, aux)`` with ``aux`` a () float (e.g. a validation loss
        computed in the same pass); ``aux`` at the accepted point is kept in the state (NaN before
        the first step).

    ``update(updates, state, params, *, value, grad, value_fn)``: ``value`` and ``grad`` of the
    objective at ``params`` (`optax.value_and_grad_from_state` finds them in the state), and
    ``value_fn(params)`` the objective. A direction that does not descend is replaced by the
    negative gradient. Other extra arguments of the chain are not used.
    """

    def init(params) -> WolfeLinesearchState:
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return WolfeLinesearchState(jnp.asarray(jnp.inf, jnp.float32), zeros, jnp.asarray(jnp.nan, jnp.float32),
                                    jnp.asarray(initial_step, jnp.float32), jnp.asarray(0, jnp.int32))

    def update(updates, state, params, *, value, grad, value_fn: Callable, **unused_extra_args):
        value_and_grad = jax.value_and_grad(value_fn, has_aux=has_aux)

        def body(s: Search) -> Search:
            out, g = value_and_grad(trial_params(params, s))
            f, aux = out if has_aux else (out, jnp.asarray(jnp.nan, jnp.float32))
            return observe(s, f, aux, g, c1, c2, max_step)

        search = begin_search(updates, value, grad, state.aux, initial_step)
        return end_search(jax.lax.while_loop(lambda s: searching(s, max_steps), body, search))

    return optax.GradientTransformationExtraArgs(init, update)


def begin_search(updates, value, grad, aux, initial_step: float = INITIAL_STEP) -> Search:
    """A search along ``updates`` from a point with objective ``value``, gradient ``grad`` and auxiliary
    output ``aux``; a direction that does not descend is replaced by the negative gradient."""
    slope = _dot(updates, grad)
    descent = slope < 0
    direction = _where(descent, updates, jax.tree_util.tree_map(jnp.negative, grad))
    start = _Point(jnp.zeros((), jnp.float32), jnp.asarray(value, jnp.float32),
                   jnp.where(descent, slope, -_dot(grad, grad)))
    return Search(jnp.asarray(BRACKET, jnp.int32), jnp.asarray(0, jnp.int32), jnp.asarray(initial_step, jnp.float32),
                  direction, start, start, start, start, start, grad, jnp.asarray(aux, jnp.float32))


def trial_params(params, s: Search):
    """The params at the search's next trial step."""
    return optax.apply_updates(params, jax.tree_util.tree_map(lambda d: s.trial * d, s.direction))


def observe(s: Search, value, aux, grad, c1: float = C1, c2: float = C2, max_step: float = MAX_STEP) -> Search:
    """The search after the objective's ``value``, ``aux`` and ``grad`` at `trial_params`."""
    t = _Point(s.trial, jnp.asarray(value, jnp.float32), _dot(grad, s.direction))
    aux = jnp.asarray(aux, jnp.float32)
    better = jnp.isfinite(t.f) & (t.f <= s.start.f + c1 * t.a * s.start.g) & (t.f < s.best.f)
    s = s._replace(best=_where(better, t, s.best), best_grad=_where(better, grad, s.best_grad),
                   best_aux=_where(better, aux, s.best_aux))
    return _next_state(s, t, c1, c2, max_step)


def searching(s: Search, max_steps: int = MAX_STEPS) -> jnp.ndarray:
    """Whether the search needs another evaluation."""
    return (s.phase != DONE) & (s.count < max_steps)


def end_search(s: Search) -> tuple[Any, WolfeLinesearchState]:
    """(updates, line-search state) of a finished search: the best point's step along the direction."""
    updates = jax.tree_util.tree_map(lambda d: s.best.a * d, s.direction)
    return updates, WolfeLinesearchState(s.best.f, s.best_grad, s.best_aux, s.best.a, s.count)
