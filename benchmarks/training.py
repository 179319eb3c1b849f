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

A second table runs the crossvalidation's training both ways in the same run, each in a
fresh process (`crossval_run`): all folds at once (`batched_training`) and
fold by fold (the default), for every backbone of ``--backbones``, on the first ``--cv-images`` images
with ``--cv-folds`` folds and the paper's stopping rule: wall time of the training (cache
built beforehand, centre-bias fits included), seconds per epoch, peak RSS, user and system
CPU seconds of the process, and the grid dtype chosen for the device.

    python -m benchmarks.training [--images 1003] [--subset 50] [--epochs 3]
    python -m benchmarks.training --cv-images 1003 --cv-folds 10 --backbones efficientnet_lite0,efficientnet_lite2
    python -m benchmarks.training --compare runs/crossval runs/crossval_at_once   # per-fold LL side by side
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks import isolated, load_average, machine_line, measure, table
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
    from deepgaze_jax.input_pipeline import make_groups
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
            groups = make_groups(dict(zip(chunk, grids)), dict(zip(chunk, cb)), fixations, chunk, config.cell)
            holder["state"], loss = steps.train_epoch(holder["state"], groups)
            jax.block_until_ready(loss)

    return run


def crossval_run(backbone: str, images: int, folds: int, at_once: bool, cache_dir: str, seeds: int = 1) -> dict:
    """Trains a crossvalidation on the first ``images`` MIT1003 images (run by `isolated`); its costs.

    The feature cache is read (or built) first and not timed; everything after it is: fold
    setup (centre bias, statistics), training, held-out prediction and writing the folds.
    """
    import resource

    import jax

    from deepgaze_jax import crossvalidation
    from deepgaze_jax.batched_training import resolve_dtype
    from deepgaze_jax.data.datasets import to_working_space
    from deepgaze_jax.data.mit1003 import mit1003
    from deepgaze_jax.feature_cache import cached_feature_grids
    from deepgaze_jax.training import TrainConfig
    from experiments.configs import model_config

    config = model_config(backbone)
    dataset = mit1003()
    dataset = dataset.subset(np.arange(min(images, len(dataset))))
    working, fixations = to_working_space(dataset, workers=2, progress=False)
    grids = cached_feature_grids(working, config, config.get_backbone().load_weights(), cache_dir, progress=False)
    del working
    usage, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deepgaze-bench-cv-") as workdir:
        crossvalidation.run_crossvalidation(
            crossvalidation.FoldData(grids, fixations), config, TrainConfig(), workdir, num_folds=folds,
            log=lambda _: None, seeds=seeds, at_once=at_once,
        )
        wall_s = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        histories = [json.loads((Path(workdir) / f"fold_{k}" / "history.json").read_text()) for k in range(folds)]
        heldout = crossvalidation.load_heldout(Path(workdir), folds)
    epochs = [h["epochs"] for h in histories]
    train_s = histories[0]["train_s"] if at_once else sum(h["train_s"] for h in histories)
    return {
        "wall_s": wall_s, "train_s": train_s, "epochs": epochs,
        "s_per_epoch": train_s / (max(epochs) if at_once else sum(epochs)),
        "user_s": after.ru_utime - usage.ru_utime, "system_s": after.ru_stime - usage.ru_stime,
        "minor_faults": after.ru_minflt - usage.ru_minflt,
        "dtype": resolve_dtype()[0].name, "device": jax.devices()[0].device_kind, "load": load_average(),
        "val_nll_nats": [h["val_nll_nats"][h["best_epoch"]] for h in histories], "heldout_images": len(heldout),
    }


def crossval_table(backbones, images: int, folds: int, cache_dir: str, seeds: int = 1) -> str:
    """Vectorised vs fold-by-fold training of a crossvalidation, per backbone (`crossval_run` each)."""
    rows = []
    for backbone in backbones:
        for at_once in (True, False):
            r = isolated("benchmarks.training:crossval_run", timeout=3600, backbone=backbone, images=images,
                         folds=folds, at_once=at_once, cache_dir=cache_dir, seeds=seeds)
            rows.append([
                backbone, f"all {folds * seeds} at once" if at_once else "fold by fold",
                f"{r['wall_s']:.0f}", f"{r['s_per_epoch']:.2f}", f"{min(r['epochs'])}-{max(r['epochs'])}",
                f"{r['peak_rss_mib']:.0f}", f"{r['user_s']:.0f}", f"{r['system_s']:.0f}",
                f"{100 * r['system_s'] / max(r['user_s'], 1e-9):.0f}%", f"{r['minor_faults'] / 1e6:.1f}M",
                r["dtype"], r["load"],
            ])
    return table(
        f"Crossvalidation training on the first {images} MIT1003 images, {folds} folds x {seeds} seed(s)",
        ["backbone", "how", "wall s", "s/epoch", "epochs", "peak RSS MiB", "user s", "system s", "system/user",
         "minor faults", "dtype", "load (1/5/15) after"],
        rows,
        notes=[
            "Wall time from the cached grids to the written folds (centre-bias fits, training, held-out "
            "prediction); s/epoch: training seconds over epochs run (at once: epochs of the longest model; "
            "fold by fold: summed over folds). CPU seconds and page faults of the benchmark process.",
            f"Machine: {machine_line()}.",
        ],
    )


def compare_table(workdirs: list[str]) -> str:
    """Per-fold held-out LL (bits/fix) of finished crossvalidation runs side by side (their report.json)."""
    reports = [json.loads((Path(w) / "report.json").read_text()) for w in workdirs]
    folds = len(reports[0]["folds"])
    rows = [[str(k), *(f"{r['folds'][k]['ll_bits']:.5f}" for r in reports),
             f"{max(r['folds'][k]['ll_bits'] for r in reports) - min(r['folds'][k]['ll_bits'] for r in reports):.2e}"]
            for k in range(folds)]
    rows.append(["all", *(f"{r['overall']['ll_bits']:.5f}" for r in reports), ""])
    rows.append(["IG explained %", *(f"{r['overall']['ig_explained_pct']:.2f}" for r in reports), ""])
    return table("Held-out LL per fold (bits/fixation)", ["fold", *workdirs, "max - min"], rows)


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="MIT1003 images used (1003: all; else scaled)")
    parser.add_argument("--subset", type=int, default=50, help="images timed without the cache")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs with the cache")
    parser.add_argument("--batch-size", type=int, default=32, help="Adam minibatch")
    parser.add_argument("--cache-batch", type=int, default=8, help="images per backbone call when building the cache")
    parser.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite2",
                        help="comma-separated backbones of the crossvalidation table")
    parser.add_argument("--cv-images", type=int, default=200, help="MIT1003 images of the crossvalidation table")
    parser.add_argument("--cv-folds", type=int, default=10)
    parser.add_argument("--cv-seeds", type=int, default=1)
    parser.add_argument("--cv-only", action="store_true", help="only the crossvalidation table")
    parser.add_argument("--cache-dir", default="cache/features", help="feature cache of the crossvalidation table")
    parser.add_argument("--compare", nargs="+", default=None, metavar="WORKDIR",
                        help="only print the per-fold held-out LL of finished crossvalidation runs side by side")
    args = parser.parse_args(argv)
    if args.compare:
        return [compare_table(args.compare)]
    cv = crossval_table(args.backbones.split(","), args.cv_images, args.cv_folds, args.cache_dir, args.cv_seeds)
    if args.cv_only:
        return [cv]

    import jax

    from deepgaze_jax import training as T
    from deepgaze_jax.data.datasets import to_working_space
    from deepgaze_jax.data.mit1003 import mit1003
    from deepgaze_jax.input_pipeline import feature_stats, make_groups
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
        stats = feature_stats(grids, everything)
        groups = make_groups(grids, log_cbs, fixations, everything, config.cell)
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
        ),
        cv,
    ]


if __name__ == "__main__":
    main()
