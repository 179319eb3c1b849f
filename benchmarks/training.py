"""Training speed on MIT1003: seconds per epoch with the feature cache vs without it.

Real data (`deepgaze_jax.data.mit1003.mit1003()` + `to_working_space`, the paper's
384 x 512 / 512 x 384 working sizes), the default model (EfficientNet-Lite0 taps, paper
readout), uniform centre bias (speed does not depend on it).

* cache build: `feature_cache.cached_feature_grids` over the images into an empty
  temporary directory (backbone once per image, float16 grids); its size on disk; and
  a second call that only reads the cache back.
* with cache: one L-BFGS epoch (one iteration with its line search, the project's
  default) and one Adam epoch (minibatches of 32 over every image), on the cached grids,
  after one warm-up epoch that compiles.
* without cache: an Adam epoch as the reference PyTorch training runs it, recomputing the
  frozen backbone for every minibatch (batch padded to 32 so each shape compiles once),
  then the same Adam step on the fresh grids. Timed over a subset of the images after a
  warm-up pass over the same subset, and scaled linearly to 1003 images.

With ``--images N`` < 1003 (the default, 200, keeps `benchmarks.run` short) everything is
measured on the first N images and per-epoch and one-off times are scaled linearly to 1003;
``--images 1003`` measures the whole dataset.

    python -m benchmarks.training [--images 1003] [--subset 50] [--epochs 3]
"""

from __future__ import annotations

import argparse
import functools
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks import machine_line, measure, table
from deepgaze_jax.xla_options import jit


def uniform_log_centerbias(grid_shapes) -> list[np.ndarray]:
    return [np.full(tuple(s), -math.log(s[0] * s[1]), np.float32) for s in grid_shapes]


def _epoch_timer(steps, state, groups):
    """A callable running one epoch from the current state (kept between calls), blocking on the loss."""
    import jax

    holder = {"state": state}

    def run():
        holder["state"], loss = steps.train_epoch(holder["state"], groups)
        jax.block_until_ready(loss)

    return run


def no_cache_epoch(config, weights, images, fixations, indices, stats, batch_size: int) -> Callable[[], None]:
    """A callable running one Adam epoch over ``indices`` that recomputes the backbone per minibatch."""
    import jax
    import jax.numpy as jnp

    from deepgaze_jax import training as T
    from deepgaze_jax.model import density_grid_shape, feature_grid

    backbone = jit(functools.partial(feature_grid, config))
    train_config = T.TrainConfig(optimizer="adam", batch_size=batch_size)
    steps = T.make_steps(config, train_config)
    holder = {"state": T.create_train_state(config, train_config, stats)}
    by_shape: dict[tuple, list[int]] = {}
    for i in indices:
        by_shape.setdefault(images[i].shape, []).append(i)
    chunks = [
        (shape, members[s : s + batch_size]) for shape, members in by_shape.items()
        for s in range(0, len(members), batch_size)
    ]

    def run():
        for shape, chunk in chunks:
            batch = np.zeros((batch_size, *shape), np.uint8)
            batch[: len(chunk)] = [images[i] for i in chunk]
            grids = np.asarray(backbone(weights, jnp.asarray(batch)))
            cb = uniform_log_centerbias([density_grid_shape(config, shape[:2])] * len(chunk))
            groups = T.make_groups(dict(zip(chunk, grids)), dict(zip(chunk, cb)), fixations, chunk, config.cell)
            holder["state"], loss = steps.train_epoch(holder["state"], groups)
            jax.block_until_ready(loss)

    return run


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="MIT1003 images used (1003: all; else scaled)")
    parser.add_argument("--subset", type=int, default=50, help="images timed without the cache")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs with the cache")
    parser.add_argument("--batch-size", type=int, default=32, help="Adam minibatch")
    parser.add_argument("--cache-batch", type=int, default=8, help="images per backbone call when building the cache")
    args = parser.parse_args(argv)

    import jax

    from deepgaze_jax import training as T
    from deepgaze_jax.data.datasets import to_working_space
    from deepgaze_jax.data.mit1003 import mit1003
    from deepgaze_jax.feature_cache import cached_feature_grids
    from deepgaze_jax.model import ModelConfig, density_grid_shape

    config = ModelConfig()
    weights = config.get_backbone().load_weights()
    dataset = mit1003()
    total = len(dataset)
    dataset = dataset.subset(np.arange(min(args.images, total)))
    start = time.perf_counter()
    images, fixations = to_working_space(dataset, workers=2, progress=False)
    load_s = time.perf_counter() - start
    n = len(images)
    everything = list(range(n))
    scale = total / n

    with tempfile.TemporaryDirectory(prefix="deepgaze-bench-cache-") as directory:
        start = time.perf_counter()
        grids = cached_feature_grids(images, config, weights, directory, batch_size=args.cache_batch, progress=False)
        build_s = time.perf_counter() - start
        size_mib = sum(f.stat().st_size for f in Path(directory).iterdir()) / 2**20
        start = time.perf_counter()
        grids = cached_feature_grids(images, config, weights, directory, progress=False)
        reload_s = time.perf_counter() - start

        log_cbs = uniform_log_centerbias([density_grid_shape(config, im.shape[:2]) for im in images])
        stats = T.feature_stats(grids, everything)
        groups = T.make_groups(grids, log_cbs, fixations, everything, config.cell)
        epochs = {}
        for name in ("lbfgs", "adam"):
            train_config = T.TrainConfig(optimizer=name, batch_size=args.batch_size)
            steps = T.make_steps(config, train_config)
            run = _epoch_timer(steps, T.create_train_state(config, train_config, stats), groups)
            epochs[name] = measure(run, args.epochs, warmup=1).scaled(scale)
        del groups

    subset = everything[: args.subset]
    run = no_cache_epoch(config, jax.device_put(weights), images, fixations, subset, stats, args.batch_size)
    uncached = measure(run, 2, warmup=1).scaled(total / len(subset))

    def per_epoch(timing) -> str:
        return f"{uncached.median / timing.median:.0f}x"

    scaled = "" if n == total else f", timed on {n} images and scaled x{scale:.2f}"
    return [
        table(
            f"Training on MIT1003 (Lite0 taps, paper readout): seconds per epoch over all {total} images",
            ["what", "s/epoch median (range)", "epoch without cache ÷ this"],
            [
                [f"without cache: backbone per minibatch + Adam step (timed on {len(subset)} images, "
                 f"scaled x{total / len(subset):.1f})", uncached.seconds(), "1"],
                [f"with cache: Adam epoch, minibatches of {args.batch_size}{scaled}", epochs["adam"].seconds(),
                 per_epoch(epochs["adam"])],
                [f"with cache: L-BFGS epoch (1 iteration + line search, full batch){scaled}",
                 epochs["lbfgs"].seconds(), per_epoch(epochs["lbfgs"])],
            ],
            notes=[
                f"One-off costs for {total} images{'' if n == total else f' (measured on {n}, scaled)'}: decoding + "
                f"resizing {load_s * scale:.0f} s; building the feature cache {build_s * scale:.0f} s "
                f"({1e3 * build_s / n:.0f} ms/image, batches of {args.cache_batch}), {size_mib * scale:.0f} MiB on "
                f"disk (float16); reading it back {reload_s * scale:.1f} s.",
                "Timed epochs follow one warm-up epoch (compilation); L-BFGS epochs differ in their number of "
                "line-search steps, hence the range. The cache build is paid back within the first epoch.",
                f"Machine: {machine_line()}.",
            ],
        )
    ]


if __name__ == "__main__":
    main()
