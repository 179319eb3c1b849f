"""The finalizer (paper, section 2.2): blur, centre bias, softmax.

Given the readout's saliency ``s`` resized (bilinear) to the density grid (cells of
``cell`` x ``cell`` working pixels), the model's log density over cells is

    log p = log_softmax( G_sigma * s  +  alpha * log c )          (paper, eq. 1)

with ``G_sigma`` a Gaussian of learnable width sigma (working pixels),
``log c`` the log centre-bias density on the same grid, and ``alpha`` a learnable
centre-bias weight (initialised to 1, as in the authors' implementation). The
blur is separable with a fixed maximum radius (``3 * max_sigma``) so its shape is
static under jit; edges are padded by replication (each output is a weighted
average of inputs, as scipy's ``mode="nearest"``).

Exact upsampling: if a normalised density p over cells is upsampled to pixels
by repeating each cell's value over its ``cell**2`` pixels, then
``p_pixel = p_cell / cell**2`` is again normalised, i.e.
``log p_pixel = log p_cell - 2 log(cell)`` (`expand_to_pixels`). Training and
evaluation use that identity and never materialise the pixel grid.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def gaussian_kernel(sigma: jnp.ndarray, radius: int) -> jnp.ndarray:
    """(2 * radius + 1,) normalised Gaussian taps; ``sigma`` in grid cells (traced OK)."""
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    logits = -0.5 * (offsets / sigma) ** 2
    return jax.nn.softmax(logits)


def blur_matrix(size: int, sigma: jnp.ndarray, radius: int) -> jnp.ndarray:
    """(size, size) matrix applying a 1-D Gaussian blur with edge replication.

    Row i holds the kernel taps of output i; taps that fall off the edge are added
    to the edge entry (replication padding), so every row sums to 1. Built from the
    (2 radius + 1) taps in O(size²): a band of them, plus each row's taps beyond the
    first and last entries, summed in advance (`jnp.cumsum`).
    """
    kernel = gaussian_kernel(sigma, radius)
    taps = 2 * radius + 1
    rows = jnp.arange(size)
    tap = rows[None, :] - rows[:, None] + radius  # entry (i, j) takes tap j - i + radius
    band = jnp.where((tap >= 0) & (tap < taps), kernel[jnp.clip(tap, 0, taps - 1)], 0.0)
    zero = jnp.zeros((1,), kernel.dtype)
    before = jnp.concatenate([zero, jnp.cumsum(kernel)])  # before[n]: the sum of taps 0 .. n-1
    after = jnp.concatenate([jnp.cumsum(kernel[::-1])[::-1], zero])  # after[n]: the sum of taps n ..
    left = before[jnp.clip(radius - rows, 0, taps)]  # taps landing left of entry 0
    right = after[jnp.clip(radius + size - rows, 0, taps)]  # taps landing right of entry size - 1
    return band.at[:, 0].add(left).at[:, size - 1].add(right)


def blur(x: jnp.ndarray, sigma: jnp.ndarray, radius: int) -> jnp.ndarray:
    """Separable Gaussian blur of (B, H, W) maps (sigma in cells) as two small matmuls."""
    return upsample_and_blur(x, x.shape[-2:], sigma, radius)


def resize_matrix(size: int, source: int) -> jnp.ndarray:
    """(size, source) matrix of `jax.image.resize`'s ``"linear"`` resampling along one axis
    (the identity when ``size == source``)."""
    return jax.image.resize(jnp.eye(source, dtype=jnp.float32), (size, source), "linear")


def upsample_and_blur_maps(source: tuple[int, int], shape: tuple[int, int], sigma: jnp.ndarray,
                           radius: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(H, h) row and (W, w) column matrices of `upsample_and_blur` from (h, w) ``source`` maps to ``shape``."""
    rows = blur_matrix(shape[0], sigma, radius) @ resize_matrix(shape[0], source[0])
    cols = blur_matrix(shape[1], sigma, radius) @ resize_matrix(shape[1], source[1])
    return rows, cols


def apply_maps(maps: tuple[jnp.ndarray, jnp.ndarray], x: jnp.ndarray) -> jnp.ndarray:
    """(B, h, w) maps through `upsample_and_blur_maps`'s (rows, cols): (B, H, W)."""
    rows, cols = maps
    return jnp.einsum("ih,bhw,jw->bij", rows, x, cols)


def upsample_and_blur(x: jnp.ndarray, shape: tuple[int, int], sigma: jnp.ndarray, radius: int) -> jnp.ndarray:
    """(B, h, w) maps resized (bilinear, `jax.image.resize`) to ``shape`` (H, W) and blurred (sigma in
    cells of ``shape``), as two small matmuls: both steps are linear and separable, so each axis's
    blur matrix is multiplied into its resize matrix first, and the (H, W) map before the blur never
    exists (4-6x fewer multiply-adds than resizing, then blurring, for a 4x upsampling)."""
    return apply_maps(upsample_and_blur_maps(x.shape[-2:], shape, sigma, radius), x)


def log_softmax_2d(x: jnp.ndarray) -> jnp.ndarray:
    """Normalises (B, H, W) log values over H and W: logsumexp of each map becomes 0.

    The maximum is subtracted first, so large inputs (|x| ~ 1e4) keep float32 precision.
    """
    return jax.nn.log_softmax(x, axis=(-2, -1))


def expand_to_pixels(log_density: np.ndarray | jnp.ndarray, cell: int) -> np.ndarray | jnp.ndarray:
    """(..., H, W) log density over cells -> (..., H*cell, W*cell) over pixels, exactly normalised.

    A NumPy array in gives a NumPy array out, computed on the host (no device round trip per image when
    scoring stored maps); anything else (JAX arrays, traced values) stays JAX."""
    xp = np if isinstance(log_density, np.ndarray) else jnp
    up = xp.repeat(xp.repeat(log_density, cell, axis=-2), cell, axis=-1)
    return up - 2.0 * math.log(cell)


def sigma_in_cells(log_sigma: jnp.ndarray, cell: int, max_sigma: float) -> jnp.ndarray:
    """The blur width in density-grid cells: exp(log_sigma) working pixels, clipped to [0.5, max_sigma]."""
    return jnp.clip(jnp.exp(log_sigma), 0.5, max_sigma) / cell


def blur_radius(cell: int, max_sigma: float) -> int:
    """The blur's fixed radius in cells (3 max_sigma), static under jit."""
    return math.ceil(3 * max_sigma / cell)


def finalizer_maps(params, source: tuple[int, int], shape: tuple[int, int], cell: int,
                   max_sigma: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """`upsample_and_blur_maps` of a `Finalizer`'s ``params`` from (h, w) saliency to the (H, W) density grid.

    They depend on the params only (not on the image): a loss over many images of one shape can
    compute them once (`batched_training.make_model_loss`).
    """
    sigma = sigma_in_cells(params["log_sigma"], cell, max_sigma)
    return upsample_and_blur_maps(source, shape, sigma, blur_radius(cell, max_sigma))


def finalizer_logits(maps: tuple[jnp.ndarray, jnp.ndarray], alpha: jnp.ndarray, saliency: jnp.ndarray,
                     log_centerbias: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W) unnormalised log density ``G_sigma * s + alpha * log c`` (paper, eq. 1, before the softmax)
    from (B, h, w) saliency through `finalizer_maps` ``maps`` and the (H, W) or (B, H, W) log centre bias."""
    return apply_maps(maps, saliency) + alpha * log_centerbias


def finalize(maps: tuple[jnp.ndarray, jnp.ndarray], alpha: jnp.ndarray, saliency: jnp.ndarray,
             log_centerbias: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W) log density (paper, eq. 1): `finalizer_logits` normalised by `log_softmax_2d`."""
    return log_softmax_2d(finalizer_logits(maps, alpha, saliency, log_centerbias))


class Finalizer(nn.Module):
    """(B, h, w) saliency and (B, H, W) log centre bias on the density grid -> (B, H, W) log density (nats).

    The saliency is resized to the density grid (bilinear) together with the blur
    (`upsample_and_blur`); on the density grid already (h, w = H, W) it is only blurred.
    """

    cell: int
    init_sigma: float = 16.0
    max_sigma: float = 64.0

    @nn.compact
    def __call__(self, saliency: jnp.ndarray, log_centerbias: jnp.ndarray) -> jnp.ndarray:
        log_sigma = self.param("log_sigma", lambda _: jnp.asarray(math.log(self.init_sigma), jnp.float32))
        alpha = self.param("center_bias_weight", lambda _: jnp.asarray(1.0, jnp.float32))
        maps = finalizer_maps({"log_sigma": log_sigma}, saliency.shape[-2:], log_centerbias.shape[-2:], self.cell,
                              self.max_sigma)
        return finalize(maps, alpha, saliency, log_centerbias)
