"""Tiny synthetic fixation data whose fixations follow feature channel 0 (for training tests)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.data.nus_mat import save_nus_mat
from deepgaze_jax.model import ModelConfig

# "precomputed": outside the backbone registry, since the grids are synthetic (no backbone computes them).
CONFIG = ModelConfig(backbone="precomputed", readout_features=(4, 1), init_sigma=4.0, max_sigma=8.0)
STRIDE = 16
# Fold seeds for 3 folds over `make_data`'s 12 images whose every fold holds out one of the portrait
# images 3, 7, 11: all folds train on the same shapes (6 + 2 images) and stop on the same (3 + 1),
# so their fresh jits hit the compilation cache instead of compiling a program per fold.
CV_SEED, OTHER_CV_SEED = 1, 9
NUS_SIZES = [(48, 64), (64, 48), (48, 64), (60, 80)]  # (height, width) of the `nus_dataset` fixture's images


def make_data(num_images: int = 12, channels: int = 6, per_image: int = 15, seed: int = 0, portrait_every: int = 4):
    """Feature grids, density-grid log centre biases and working-space fixations.

    Landscape images are 48 x 64 working pixels (grid 3 x 4, density grid 12 x 16);
    every ``portrait_every``-th image is 64 x 48. Returns (grids, log_centerbias, fixations):
    lists of (h, w, C) float16 and (H, W) float32 arrays, and `Fixations`.
    """
    rng = np.random.default_rng(seed)
    cell = CONFIG.cell
    grids, log_cbs, xs, ys, ns, sizes = [], [], [], [], [], []
    for i in range(num_images):
        shape = (4, 3) if portrait_every and i % portrait_every == portrait_every - 1 else (3, 4)
        grid = rng.standard_normal((*shape, channels)).astype(np.float16)
        big = np.repeat(np.repeat(grid[..., 0].astype(np.float64), STRIDE // cell, 0), STRIDE // cell, 1)
        p = np.exp(2.0 * big)
        p /= p.sum()
        flat = rng.choice(p.size, size=per_image + i % 3, p=p.ravel())
        rows, cols = np.unravel_index(flat, p.shape)
        ys.append((rows + rng.uniform(0, 1, len(rows))) * cell)
        xs.append((cols + rng.uniform(0, 1, len(cols))) * cell)
        ns.append(np.full(len(rows), i))
        sizes.append((shape[0] * STRIDE, shape[1] * STRIDE))
        grids.append(grid)
        r, c = np.meshgrid(np.linspace(-1, 1, p.shape[0]), np.linspace(-1, 1, p.shape[1]), indexing="ij")
        log_cb = -(r**2 + c**2)  # a centre bias that is not uniform, so its weight has a gradient
        log_cbs.append((log_cb - np.log(np.exp(log_cb).sum())).astype(np.float32))
    n = np.concatenate(ns)
    fixations, _ = Fixations.create(np.concatenate(xs), np.concatenate(ys), n, sizes, subject=np.arange(len(n)) % 3)
    return grids, log_cbs, fixations


def fixture_root(tmp_path, sizes=((6, 8), (12, 9), (7, 7))):
    """A MIT1003-like folder: random images of ``sizes`` (h, w), two fixations by observer 0 of 15."""
    rng = np.random.default_rng(0)
    (tmp_path / "stimuli").mkdir(parents=True)
    entries = []
    for k, (h, w) in enumerate(sizes):
        name = f"img{k}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "stimuli" / name)
        entries.append((name, [([1, w], [h, 1], [100, 200])] + [([], [], [])] * 14))
    save_nus_mat(tmp_path / "fixations.mat", entries)
    return tmp_path


TRAIN_IMAGES = list(range(8))
VAL_IMAGES = list(range(8, 12))


def training_data():
    """`make_data` with feature stats of images 0-7 and the shape groups of images 0-7 (train) and 8-11 (val)."""
    from deepgaze_jax.input_pipeline import feature_stats, make_groups

    grids, log_cbs, fixations = make_data()
    stats = feature_stats(grids, TRAIN_IMAGES)
    train = make_groups(grids, log_cbs, fixations, TRAIN_IMAGES, CONFIG.cell)
    val = make_groups(grids, log_cbs, fixations, VAL_IMAGES, CONFIG.cell)
    return grids, log_cbs, fixations, stats, train, val
