"""`jit`: `jax.jit` with the XLA compiler options that make our programs fast on CPU.

XLA:CPU can hand dot products (our 1x1 convolutions, the readout, the separable blur) to
YNNPACK instead of its default Eigen kernels. On a 2-core AVX2 EPYC this made
`predict_density` at 1024x768 1.3-1.5x faster for EfficientNet-Lite and 1.2x for
VGG-19, at float32 rounding error (`python -m benchmarks.inference`, docs/benchmarks.md).
It is used where the backbone runs: `model.log_density_grid`, `predict_density` and the
feature cache build. Training on cached grids keeps plain `jax.jit` (the option made
its epochs 4-13% slower).

The option is passed per compilation (``jax.jit(..., compiler_options=...)``), never through
the process-wide ``XLA_FLAGS``, so nothing else in the user's process changes. It is a
debug option that only XLA:CPU's compiler reads (not yet run on a GPU with jaxlib 0.10;
the H100 figures in docs/benchmarks.md used jaxlib 0.11, without it). XLA rejects option names
and values it does not know, so it is used only with the jaxlib versions it was measured
on (`MEASURED_JAXLIB`), and ``DEEPGAZE_JAX_XLA_CPU_YNN=0`` turns it off (to compare, or to
work around a compiler bug).
"""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any, Callable

import jax
from jax._src import core as jax_core  # trace_state_clean: see `top_level`

from deepgaze_jax import settings

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
YNN_VALUE = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
MEASURED_JAXLIB = ("0.10.",)
OFF_SWITCH = settings.XLA_CPU_YNN


def compiler_options() -> dict[str, str]:
    """The options `jit` adds: YNNPACK dots on a measured jaxlib unless ``$DEEPGAZE_JAX_XLA_CPU_YNN`` is 0.

    Read at every top-level call (`settings.ynn_enabled`), so the switch works whenever it is set.
    """
    if not settings.ynn_enabled():
        return {}
    version = jaxlib_version()
    return {YNN_OPTION: YNN_VALUE} if version is not None and version.startswith(MEASURED_JAXLIB) else {}


@functools.cache
def jaxlib_version() -> str | None:
    """The installed jaxlib's version (None if its metadata is missing), looked up once per process: it cannot
    change under a running JAX, and the lookup took 1.5-2.5 ms, paid at every top-level call."""
    try:
        return importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None


def top_level() -> bool:
    """Whether no JAX trace (jit, vmap, grad, ...) is active, i.e. a call would run eagerly.

    JAX accepts compiler options only there. It has no public query for this; its own
    ``core.trace_state_clean`` (what jax2tf and pmap ask) is the check, not the text of an error.
    """
    return jax_core.trace_state_clean()


class FastJit:
    """A function jitted with `compiler_options` when called at top level, plain when traced.

    JAX accepts compiler options only on a top-level ``jit``; inside a caller's own
    ``jit``/``vmap``/``grad`` the plain version is traced into the caller's program (which is
    compiled with the caller's options). The options are looked up at each top-level call
    (one compiled version per distinct set); attributes (``lower``, ``trace``, ...) are those
    of the version for the current options.
    """

    def __init__(self, fun: Callable, user_options: dict[str, str], **kwargs: Any):
        self._fun, self._user_options, self._kwargs = fun, dict(user_options), kwargs
        self._plain = jax.jit(fun, **kwargs)
        self._by_options: dict[tuple, Any] = {}
        functools.update_wrapper(self, fun)

    def _top(self) -> Any:
        options = {**compiler_options(), **self._user_options}
        if not options:
            return self._plain
        key = tuple(sorted(options.items()))
        if key not in self._by_options:
            self._by_options[key] = jax.jit(self._fun, compiler_options=options, **self._kwargs)
        return self._by_options[key]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return (self._top() if top_level() else self._plain)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (e.g. during copying): never the jitted function's
            raise AttributeError(name)
        return getattr(self._top(), name)


def jit(fun: Callable | None = None, **kwargs: Any) -> Any:
    """`jax.jit` (same arguments, usable as ``@jit`` or ``functools.partial(jit, ...)``) plus `compiler_options`.

    Returns a `FastJit`. Options given in ``compiler_options=`` win over ours.
    """
    if fun is None:
        return functools.partial(jit, **kwargs)
    return FastJit(fun, kwargs.pop("compiler_options", None) or {}, **kwargs)
