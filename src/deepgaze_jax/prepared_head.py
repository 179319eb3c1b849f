"""A mixture head with its parameter-only work done once, for predicting many images.

`model.SaliencyHead` (readout + finalizer) computes on every call values that depend on its
parameters alone: the first layer's kernel with the fixed standardisation folded in
(`readout.fold_first_layer`) and the finalizer's resize + blur matrices (`finalizer.finalizer_maps`),
for each of the M mixture components. For the bundled models (sixty components on grids of
1344-1648 channels) they took about a third of a member's time per image. `prepare_head` computes
them once per model and working size; `prepared_log_density` does the rest per image: the maths of
`SaliencyHead` for each component (the same functions), with the M first layers as one matmul over
the grid, averaged in probability over the components. `cached_prepare` keeps the prepared heads of
the last models used, so `predict_density` pays for them once per model and working size.

    >>> import jax, jax.numpy as jnp
    >>> from deepgaze_jax.model import ModelConfig, init_head
    >>> config = ModelConfig(taps=("stage5",))
    >>> head = init_head(config, jax.random.PRNGKey(0), num_components=3)
    >>> prepared = prepare_head(config, head, (3, 4), (12, 16))
    >>> grid = jnp.ones((1, 3, 4, config.num_channels()))
    >>> log_p = prepared_log_density(config, prepared, grid, jnp.full((1, 12, 16), -jnp.log(192.0)))
    >>> log_p.shape, abs(float(jax.nn.logsumexp(log_p))) < 1e-5
    ((1, 12, 16), True)
"""

from __future__ import annotations

import collections
import functools
import math
import threading

import flax
import jax
import jax.numpy as jnp

from deepgaze_jax.finalizer import finalize, finalizer_maps
from deepgaze_jax.readout import first_layer, fold_first_layer, grid_matmul, readout_tail

CACHE_SIZE = 16
"""Prepared heads `cached_prepare` keeps, one per model and working size (a sixty-component head of 1648
channels is about 7 MB, and the entry keeps the model's own head arrays alive as well); images of many
aspect ratios through a three-member ensemble share them, evicting the oldest."""


@flax.struct.dataclass
class PreparedHead:
    """The parameter-only values of a head of M components for one grid and density-grid shape.

    Attributes:
      kernel: (C, M, F) first-layer kernels, standardisation folded in, side by side for one matmul.
      first: the rest of `readout.fold_first_layer`'s values, each with a leading M axis.
      later: the later layers' {"kernel", "bias"} (leading M).
      maps: `finalizer.finalizer_maps`' (rows, cols), (M, H, h) and (M, W, w).
      alpha: (M,) centre-bias weights.
    """

    kernel: jnp.ndarray
    first: dict
    later: tuple
    maps: tuple
    alpha: jnp.ndarray


def _prepare_component(config, variables, grid_shape, density_shape) -> tuple:
    readout, stats = variables["params"]["readout"], variables["stats"]["readout"]
    folded = fold_first_layer(readout["layer0"]["kernel"], readout["layer0"]["bias"], stats["mean"], stats["std"])
    later = tuple(readout[f"layer{i}"] for i in range(1, len(config.readout_features)))
    finalizer = variables["params"]["finalizer"]
    maps = finalizer_maps(finalizer, grid_shape, density_shape, config.cell, config.max_sigma)
    return folded, later, maps, finalizer["center_bias_weight"]


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def prepare_head(config, head, grid_shape: tuple[int, int], density_shape: tuple[int, int]) -> PreparedHead:
    """The `PreparedHead` of ``head`` (`model.SaliencyHead` variables with a leading mixture axis, of a model
    of ``config``) for (h, w) feature grids and (H, W) density grids."""
    folded, later, maps, alpha = jax.vmap(lambda v: _prepare_component(config, v, grid_shape, density_shape))(head)
    kernel = jnp.moveaxis(folded.pop("kernel"), 0, 1)
    return PreparedHead(kernel=kernel, first=folded, later=later, maps=maps, alpha=alpha)


def prepared_log_density(config, prepared: PreparedHead, grid: jnp.ndarray, log_centerbias: jnp.ndarray) -> jnp.ndarray:
    """(B, h, w, C) feature grid, (B, H, W) log centre bias -> (B, H, W) log density (nats) of the mixture:
    each component as `model.SaliencyHead` computes it, averaged in probability."""
    channels, components, width = prepared.kernel.shape
    product = grid_matmul(grid, prepared.kernel.reshape(channels, components * width))
    product = jnp.moveaxis(product.reshape(*grid.shape[:-1], components, width), -2, 0)

    def component(first, later, maps, alpha, product):
        x = first_layer(config.readout_kind, first, grid, product)
        saliency = readout_tail(config.readout_kind, x, [functools.partial(_dense, **layer) for layer in later])
        return finalize(maps, alpha, saliency, log_centerbias)

    per_component = jax.vmap(component)(prepared.first, prepared.later, prepared.maps, prepared.alpha, product)
    return jax.nn.logsumexp(per_component, axis=0) - math.log(components)


def _dense(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    """``flax.linen.Dense``'s output from its variables."""
    return x @ kernel + bias


_cache: collections.OrderedDict = collections.OrderedDict()
_cache_lock = threading.Lock()


def cached_prepare(config, head, grid_shape: tuple[int, int], density_shape: tuple[int, int]) -> PreparedHead:
    """`prepare_head`, kept for the last `CACHE_SIZE` heads and shapes. A head of concrete jax arrays (immutable)
    is known by its structure and its arrays' identity (the entry holds them, so no other array takes their ids
    while it is kept); a head with other leaves (NumPy arrays, which can change in place, or tracers under
    ``jit``/``grad``/``vmap``) is prepared anew at every call."""
    leaves, structure = jax.tree_util.tree_flatten(head)
    if not all(isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return prepare_head(config, head, tuple(grid_shape), tuple(density_shape))
    key = (config, structure, tuple(id(leaf) for leaf in leaves), tuple(grid_shape), tuple(density_shape))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key][1]
    prepared = prepare_head(config, head, tuple(grid_shape), tuple(density_shape))
    with _cache_lock:
        _cache[key] = (leaves, prepared)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return prepared


def cached_heads() -> int:
    """How many prepared heads `cached_prepare` holds."""
    return len(_cache)


def clear_cache() -> None:
    """Drops every prepared head `cached_prepare` holds."""
    with _cache_lock:
        _cache.clear()

