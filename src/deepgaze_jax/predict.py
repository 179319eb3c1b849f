"""`predict_density` and `sample_fixations`: the model applied to user images.

Any image (path, PIL, uint8/uint16/float array; grayscale, RGB or RGBA; 1 pixel to
100 megapixels) is resized to its working size (`images.working_size`: longer
side 512, shorter side rounded to a multiple of 32, as in the paper's 1024x768
images downsampled by 2), the model computes a log density on the working grid,
and the result is mapped back to the image's own H x W:

* if H x W is the working size (e.g. any 512x384 image), by exact nearest
  upsampling of the density grid (`finalizer.expand_to_pixels`);
* otherwise by `densities.resize_log_density` (bilinear in log space where it grows,
  area-summed mass where it shrinks), renormalised.

Images are grouped by working size and run in batches, so one compilation
serves every image of the same aspect ratio. An ensemble's members are averaged in
probability on the density grid, before the mapping (one mapping per image, not one
per member).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax.finalizer import expand_to_pixels
from deepgaze_jax.images import ImageLike, load_working_image, to_rgb_uint8
from deepgaze_jax.densities import log_mean_density, log_normalize, resize_log_density
from deepgaze_jax.input_pipeline import padded_size
from deepgaze_jax.model import (
    DeepGazeParams, Model, centerbias_on_grid, density_grid_shape, ensemble_members, feature_grid_shape,
    prepared_log_density_grid,
)
from deepgaze_jax.model_io import clean_template
from deepgaze_jax.prepared_head import cached_prepare

CenterBiasLike = Union[None, str, np.ndarray]


def _centerbias_template(params: DeepGazeParams, centerbias: CenterBiasLike):
    if centerbias is None:
        return params.centerbias
    if isinstance(centerbias, str):
        if centerbias != "uniform":
            raise ValueError(f"centerbias must be None, 'uniform' or a 2-D log density array, got {centerbias!r}")
        return None
    return clean_template(centerbias)


def _density_grids(params: DeepGazeParams, working: Sequence[np.ndarray], centerbias: CenterBiasLike, batch_size: int,
                   backbone_dtype) -> list[np.ndarray]:
    """Per working image, the model's log density over its density grid, in batches of one working size (the
    head's parameter-only work done once per working size: `prepared_head.cached_prepare`)."""
    template = _centerbias_template(params, centerbias)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, w in enumerate(working):
        groups[w.shape[:2]].append(i)
    results: list[np.ndarray | None] = [None] * len(working)
    for shape, members in groups.items():
        grid_shape = density_grid_shape(params.config, shape)
        log_cb = centerbias_on_grid(template, grid_shape)
        prepared = cached_prepare(params.config, params.head, feature_grid_shape(params.config, shape), grid_shape)
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            padded = padded_size(len(chunk), batch_size)
            batch = np.stack([working[i] for i in chunk] + [working[chunk[0]]] * (padded - len(chunk)))
            out = np.asarray(prepared_log_density_grid(
                params.config, params.backbone_weights, prepared, jnp.asarray(batch),
                jnp.broadcast_to(log_cb, (padded, *grid_shape)), jnp.dtype(backbone_dtype),
            ))
            for j, i in enumerate(chunk):
                results[i] = out[j]
    return results


def _to_pixels(grid_density: np.ndarray, working_shape: tuple[int, int], original: tuple[int, int], cell: int) -> np.ndarray:
    """A density-grid log density mapped to the image's own H x W (module docstring), on the host."""
    if tuple(original) == tuple(working_shape):
        return expand_to_pixels(np.asarray(grid_density), cell)
    return resize_log_density(np.asarray(grid_density), original)


def _mean_per_image(per_member: Sequence[Sequence]) -> list:
    """Per image, the members' log densities averaged in probability (float32); one member's as they are."""
    if len(per_member) == 1:
        return list(per_member[0])
    return [log_mean_density([np.asarray(d) for d in densities], dtype=np.float32) for densities in zip(*per_member)]


def _predict_mixed_grids(models: Sequence[DeepGazeParams], images, centerbias, batch_size, backbone_dtype) -> list[np.ndarray]:
    """An ensemble whose members differ in working size or cell: averaged in probability per pixel."""
    decoded = [to_rgb_uint8(im) for im in images]
    return _mean_per_image([predict_density(m, decoded, centerbias, batch_size, backbone_dtype) for m in models])


def predict_density(
    params: Union[Model, Sequence[Model]],
    img: Union[ImageLike, Sequence[ImageLike]],
    centerbias: CenterBiasLike = None,
    batch_size: int = 8,
    backbone_dtype=jnp.float32,
) -> Union[np.ndarray, list[np.ndarray]]:
    """Fixation log density for one image or many.

    Args:
      params: a model (`DeepGazeParams`), an `Ensemble` (``load_model()``, the bundled default)
        or a list of them: the members' densities are averaged in probability on their shared
        density grid (as the crossvalidated ensembles were scored), then mapped to the image like
        a single model's (`densities.log_mean_density`; nested ensembles are flattened, each single
        model weighing the same; members of different working sizes or cells are averaged per
        pixel instead), e.g. ``load_model("lite0+lite2")`` or ``[load_model("lite0"), load_model("lite2")]``.
      img: one image (path, bytes, PIL image or array (H, W), (H, W, 1|3|4)), a list of
        them, or a (B, H, W, 3) NumPy or JAX array.
      centerbias: None uses the model's own centre bias (uniform if it has none);
        ``"uniform"`` forces a uniform prior; a finite 2-D array is taken as a log density
        over the image (any resolution, resized to each image; `model_io.clean_template`
        floors it 1000 nats below its peak, so extreme values stay finite).
      batch_size: images per forward pass.
      backbone_dtype: the backbone's compute dtype. ``jnp.bfloat16`` is faster on GPUs but
        moves the density (docs/benchmarks.md gives max |Δ log p| and KL per backbone);
        float32 is the default and the faster one on CPUs.

    Returns:
      (H, W) float32 log density in nats per pixel with logsumexp = 0, for one image; a
      list of them for a list or a 4-D array.
    """
    single = not isinstance(img, (list, tuple)) and not (isinstance(img, (np.ndarray, jax.Array)) and img.ndim == 4)
    images = [img] if single else list(img)
    if not images:
        return []
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    members = ensemble_members(params)
    config = members[0].config
    if any((m.config.long_side, m.config.cell) != (config.long_side, config.cell) for m in members):
        results = _predict_mixed_grids(members, images, centerbias, batch_size, backbone_dtype)
        return results[0] if single else results
    working, originals = zip(*(load_working_image(im, config.long_side) for im in images))
    per_member = [_density_grids(m, working, centerbias, batch_size, backbone_dtype) for m in members]
    grids = _mean_per_image(per_member)
    results = [_to_pixels(g, w.shape[:2], o, config.cell) for g, w, o in zip(grids, working, originals)]
    return results[0] if single else results


def key_generator(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded by the JAX PRNG ``key`` (raw ``PRNGKey`` or typed key): one key, one stream."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, np.uint32).ravel())


def sample_fixations(log_density, n: int, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``n`` fixations from an (H, W) log density (normalised here; any constant offset is fine).

    Returns (x, y) float64 arrays in pixel coordinates (`data.fixations` convention: a
    pixel is chosen with its probability, then a point uniformly inside it). The draw is in float64 on
    the host (inverse CDF: O(H W + n log(H W)), whatever ``n``), reproducible for a given ``key``.
    """
    log_density = np.asarray(log_density, np.float64)
    if log_density.ndim != 2:
        raise ValueError(f"log_density must be (H, W), got shape {log_density.shape}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not np.all(np.isfinite(log_density) | (log_density == -np.inf)) or np.all(log_density == -np.inf):
        raise ValueError("log_density must be finite (or -inf where the density is 0) with some mass")
    width = log_density.shape[1]
    rng = key_generator(key)
    index = rng.choice(log_density.size, size=n, p=np.exp(log_normalize(log_density)).ravel())
    offset = rng.random((n, 2))
    return index % width + offset[:, 0], index // width + offset[:, 1]


def predict_density_without_centerbias(
    params: Union[Model, Sequence[Model]],
    img: Union[ImageLike, Sequence[ImageLike]],
    batch_size: int = 8,
    backbone_dtype=jnp.float32,
) -> Union[np.ndarray, list[np.ndarray]]:
    """`predict_density` with a uniform prior in place of the model's centre bias.

    The density the paper's Table 1 scores shuffled AUC on (`metrics.sauc_no_centerbias`):
    the model's saliency alone, softmax-normalised. Same arguments and return values as
    `predict_density`, for one model or an ensemble.
    """
    return predict_density(params, img, centerbias="uniform", batch_size=batch_size, backbone_dtype=backbone_dtype)
