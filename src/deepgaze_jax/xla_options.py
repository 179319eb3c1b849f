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
import os
from typing import Any, Callable

import jax

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
YNN_VALUE = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
MEASURED_JAXLIB = ("0.10.",)
OFF_SWITCH = "DEEPGAZE_JAX_XLA_CPU_YNN"


def compiler_options() -> dict[str, str]:
    """The options `jit` adds: YNNPACK dots on a measured jaxlib unless ``$DEEPGAZE_JAX_XLA_CPU_YNN`` is 0."""
    if os.environ.get(OFF_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return {}
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return {}
    return {YNN_OPTION: YNN_VALUE} if version.startswith(MEASURED_JAXLIB) else {}


class FastJit:
    """A function jitted twice: with `compiler_options` when called at top level, without when traced.

    JAX accepts compiler options only on a top-level ``jit``; inside a caller's own
    ``jit``/``vmap``/``grad`` the plain version is traced into the caller's program (which is
    compiled with the caller's options). Attributes (``lower``, ``trace``, ...) are those of
    the top-level version.
    """

    def __init__(self, fun: Callable, options: dict[str, str], **kwargs: Any):
        self._plain = jax.jit(fun, **kwargs)
        self._top = jax.jit(fun, compiler_options=options, **kwargs) if options else self._plain
        functools.update_wrapper(self, fun)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._top is self._plain or _traced(args, kwargs):
            return self._plain(*args, **kwargs)
        try:
            return self._top(*args, **kwargs)
        except ValueError as error:  # traced although no argument is a tracer (e.g. closed over)
            if "top-level" not in str(error):
                raise
            return self._plain(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._top, name)


def _traced(args: tuple, kwargs: dict) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((args, kwargs)))


def jit(fun: Callable | None = None, **kwargs: Any) -> Any:
    """`jax.jit` (same arguments, usable as ``@jit`` or ``functools.partial(jit, ...)``) plus `compiler_options`.

    Returns a `FastJit`. Options given in ``compiler_options=`` win over ours.
    """
    if fun is None:
        return functools.partial(jit, **kwargs)
    options = {**compiler_options(), **(kwargs.pop("compiler_options", None) or {})}
    return FastJit(fun, options, **kwargs)
