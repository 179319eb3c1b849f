"""The training objective (paper, section 2.4): log-likelihood of the fixations.

The negative log-likelihood of the fixations is measured in **nats per fixation,
relative to a uniform density**. A fixation at working pixel (x, y) lies in cell
(floor(y / cell), floor(x / cell)) of the density grid; by the exact-upsampling
identity (`finalizer.expand_to_pixels`) log p_pixel = log p_cell - 2 log(cell), so

    LL_vs_uniform = log p_pixel + log(h * w) = log p_cell + log(H * W)

for an h x w working image with an H x W density grid. As in the paper, every
fixation counts the same: the loss is the mean over *all* fixations of the
training set, so images with more fixations weigh more. Fixations enter as
per-image count maps on the density grid (`fixation_counts`); the sum of
counts x LL over cells is the sum over fixations.

Devices. The images are sharded over the mesh axis (`input_pipeline.DATA_AXIS`,
`jax.shard_map`); each device sums log-likelihood and fixation count over its
images and the sums are ``psum``-ed, so the shard-mapped function *is* the global
mean loss, and ``jax.grad`` of it is the global gradient (the gradient of a
replicated parameter under ``shard_map`` is already summed over devices:
``psum``-ing it again would multiply it by the device count).

Regularisation: an L2 penalty on the readout's weight matrices (`l2_norm_squared`)
is added to the training objective only; reported losses are pure NLL.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.model import ModelConfig, SaliencyHead

if TYPE_CHECKING:
    from deepgaze_jax.input_pipeline import ShapeGroup


def fixation_counts(fixations: Fixations, image_indices: Sequence[int], grid_shape: tuple[int, int], cell: int) -> np.ndarray:
    """(len(image_indices), H, W) float32 fixation counts per density-grid cell.

    ``fixations`` are in working-space pixels; a fixation at (x, y) counts in cell
    (floor(y / cell), floor(x / cell)).
    """
    image_indices = np.asarray(image_indices, np.int64)
    position = np.full(fixations.num_images, -1, np.int64)
    position[image_indices] = np.arange(len(image_indices))
    keep = position[fixations.n] >= 0
    rows = np.minimum(np.floor(fixations.y[keep] / cell).astype(np.int64), grid_shape[0] - 1)
    cols = np.minimum(np.floor(fixations.x[keep] / cell).astype(np.int64), grid_shape[1] - 1)
    counts = np.zeros((len(image_indices), *grid_shape), np.float32)
    np.add.at(counts, (position[fixations.n[keep]], rows, cols), 1.0)
    return counts


def log_likelihood_per_image(log_density: jnp.ndarray, counts: jnp.ndarray) -> jnp.ndarray:
    """(B,) sum over each image's fixations of LL vs uniform (nats), from (B, H, W) log density and counts."""
    cells = log_density.shape[-2] * log_density.shape[-1]
    return jnp.sum(counts * (log_density + math.log(cells)), axis=(-2, -1))


@jax.custom_vjp
def log_likelihood_of_logits(logits: jnp.ndarray, counts: jnp.ndarray) -> jnp.ndarray:
    """`log_likelihood_per_image` of the density ``softmax(logits)`` over each (H, W) map, without the
    normalised map: ``sum(counts * logits) - n * logsumexp(logits) + n * log(H W)`` for n fixations.

    Its gradient w.r.t. ``logits`` is ``counts - n * softmax(logits)`` (written out: fewer passes over the
    maps than the derivative of `finalizer.log_softmax_2d`); ``counts`` get none.
    """
    return _log_likelihood_of_logits(logits, counts)[0]


def _log_likelihood_of_logits(logits, counts):
    peak = jnp.max(logits, axis=(-2, -1), keepdims=True)
    exp = jnp.exp(logits - peak)
    total = jnp.sum(exp, axis=(-2, -1))
    fixations = jnp.sum(counts, axis=(-2, -1))
    log_normaliser = peak[..., 0, 0] + jnp.log(total) - math.log(logits.shape[-2] * logits.shape[-1])
    ll = jnp.sum(counts * logits, axis=(-2, -1)) - fixations * log_normaliser
    return ll, (exp, (fixations / total)[..., None, None], counts)


def _log_likelihood_of_logits_bwd(residuals, cotangent):
    exp, scale, counts = residuals
    return cotangent[..., None, None] * (counts - scale * exp), None


log_likelihood_of_logits.defvjp(_log_likelihood_of_logits, _log_likelihood_of_logits_bwd)


def log_likelihood_sum(config: ModelConfig, variables, group: "ShapeGroup") -> tuple[jnp.ndarray, jnp.ndarray]:
    """(sum over fixations of LL vs uniform in nats, number of fixations) for one group."""
    log_density = SaliencyHead(config).apply(variables, group.grids, group.log_centerbias)
    return jnp.sum(log_likelihood_per_image(log_density, group.counts)), jnp.sum(group.counts)


def make_loss_fn(config: ModelConfig, mesh: Mesh) -> Callable[[Any, Any, "tuple[ShapeGroup, ...]"], jnp.ndarray]:
    """``loss(params, stats, groups)``: mean NLL vs uniform over all fixations of ``groups`` (nats/fix).

    The groups are sharded over ``mesh``'s (only) axis; the result is the global mean (module docstring).
    """
    (axis,) = mesh.axis_names

    def local(params, stats, groups):
        total = count = jnp.zeros((), jnp.float32)
        for group in groups:
            s, c = log_likelihood_sum(config, {"params": params, "stats": stats}, group)
            total, count = total + s, count + c
        total, count = jax.lax.psum((total, count), axis)
        return -total / jnp.maximum(count, 1.0)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(axis)), out_specs=P())


def l2_norm_squared(params) -> jnp.ndarray:
    """Sum of squares of the readout's weight matrices (the ``kernel`` leaves; no biases, no finalizer)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return sum(jnp.sum(x**2) for path, x in leaves if getattr(path[-1], "key", None) == "kernel")
