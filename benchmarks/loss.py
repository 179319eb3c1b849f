"""Where the seconds of one loss evaluation of the at-once crossvalidation go (issue #11).

The program timed is the real one: `batched_training.make_batched_steps`'s ``fresh_value_and_grad``
(the training objective of all K models and its gradient, what every line-search
iteration of `batched_training.fit_many` computes), on a `batched_training.make_pool` of
synthetic grids of MIT1003's real shapes (paper working sizes: 779 landscape images with
(24, 32, 432) EfficientNet-Lite0 grids and 96 x 128 density grids, 224 portrait ones
transposed; about 104 fixations per image at random, 10 folds with inner stopping, in the
training dtype `batched_training.resolve_dtype` of this machine). Speed does not depend on
the values.

Then the pieces, each a prefix of the head run the same way (same chunks under ``lax.scan``,
``vmap`` over the K models, value and gradient with respect to the parameters of the prefix;
the loss of a prefix is half the sum of squares of its output): the first 1x1 layer (with its
ReLU), the whole readout, the readout and the finalizer's resize + blur, and the whole head
with the likelihood. The cost of a piece is the difference between consecutive prefixes; the
rest (masks, sums over chunks, ...) is the real program less the whole head. The prefixes build
the resize + blur matrices in every chunk, the real program once per evaluation
(`batched_training.make_model_loss`), so the rest can come out negative.

FLOPs are counted analytically (multiply-adds x 2 of the dense contractions; the backward
pass of a layer costs twice its forward pass, once for a layer whose input needs no
gradient), since XLA's cost analysis counts the body of a loop once. Peak: `benchmarks.cpu_peak_flops`.
Times are wall seconds and the process's user + system CPU seconds (``resource.getrusage``;
on a shared machine the CPU seconds are the steadier figure), the median of ``--repeat``
calls after one warm-up call.

Memory: the default (all of MIT1003) peaked at 7.8 GB RSS (five compiled programs over 1.3 GB of
float32 grids); ``--landscape 100 --portrait 25`` keeps it near 1 GB, and each piece scales with
the images. The "first call" of a piece is again a difference of prefixes (mostly compilation).

    python -m benchmarks.loss [--landscape 779 --portrait 224] [--models 10] [--repeat 3]
    python -m benchmarks.loss --subsets 10,8,4,2,1 --repeat 2     # a round of b of the K models
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import resource
import statistics
import time
from typing import Callable

import numpy as np

from benchmarks import cpu_peak_flops, load_average, machine_line, table

GRID = (24, 32)
CHANNELS = 432
STRIDE_OVER_CELL = 4
FIXATIONS_PER_IMAGE = 104
FOLDS = 10


@dataclasses.dataclass(frozen=True)
class Cost:
    """Median seconds of repeated calls: wall, and the process's user + system CPU; wall seconds of the
    first call (compilation included)."""

    wall_s: float
    cpu_s: float
    first_s: float = 0.0

    def minus(self, other: "Cost") -> "Cost":
        return Cost(self.wall_s - other.wall_s, self.cpu_s - other.cpu_s, self.first_s - other.first_s)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], object], repeat: int) -> Cost:
    """Median wall and CPU seconds of ``fn()`` (which blocks) after one warm-up call, and that call's."""
    first = time.perf_counter()
    fn()
    first = time.perf_counter() - first
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), cpu_seconds()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(cpu_seconds() - cpu)
    return Cost(statistics.median(walls), statistics.median(cpus), first)


def synthetic_pool(landscape: int, portrait: int, models: int, seed: int = 0):
    """(config, train config, groups, model data, states) of K models on synthetic MIT1003-shaped grids."""
    import jax
    import jax.numpy as jnp

    from deepgaze_jax import batched_training as B, training as T
    from deepgaze_jax.data.fixations import Fixations
    from deepgaze_jax.model import ModelConfig, centerbias_on_grid

    rng = np.random.default_rng(seed)
    shapes = [GRID] * landscape + [GRID[::-1]] * portrait
    grids = [rng.standard_normal((*shape, CHANNELS), np.float32).astype(np.float16) for shape in shapes]
    config = ModelConfig()
    sizes = np.asarray(shapes) * config.grid_stride()
    image = np.repeat(np.arange(len(shapes)), FIXATIONS_PER_IMAGE)
    fixations, _ = Fixations.create(rng.uniform(0, 1, len(image)) * sizes[image, 1],
                                    rng.uniform(0, 1, len(image)) * sizes[image, 0], image, sizes)
    folds = np.arange(len(shapes)) % FOLDS
    trains = [np.flatnonzero((folds != k) & (folds != (k + 1) % FOLDS)) for k in range(models)]
    stops = [np.flatnonzero(folds == (k + 1) % FOLDS) for k in range(models)]
    r, c = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 64), indexing="ij")
    template = -(r**2 + c**2) - np.log(np.exp(-(r**2 + c**2)).sum())
    groups, data = B.make_pool(grids, fixations, [functools.partial(centerbias_on_grid, template)] * models, trains,
                               stops, config.cell, dtype=B.resolve_dtype()[0])
    train_config = T.TrainConfig()
    stats = {"readout": {"mean": jnp.zeros(CHANNELS), "std": jnp.ones(CHANNELS)}}
    states = B.stack_states([T.create_train_state(config, train_config, stats, key=jax.random.PRNGKey(k))
                             for k in range(models)])
    return config, train_config, groups, data, states


def readout_layers(config, params, stats, grids, depth: int):
    """The first ``depth`` 1x1 layers of the readout (each but the last of the readout with its ReLU)."""
    import flax.linen as nn

    from deepgaze_jax.readout import StandardizedDense

    features, weights = config.readout_features, params["readout"]
    x = StandardizedDense(features[0]).apply({"params": weights["layer0"]}, grids, stats["readout"]["mean"],
                                             stats["readout"]["std"])
    for i in range(1, depth):
        x = nn.Dense(features[i]).apply({"params": weights[f"layer{i}"]}, nn.relu(x))
    return nn.relu(x) if depth < len(features) else x[..., 0]


def upsampled(config, params, saliency, shape):
    """The finalizer's resize + blur of (B, h, w) saliency to the (H, W) density grid."""
    from deepgaze_jax.finalizer import apply_maps, finalizer_maps

    return apply_maps(finalizer_maps(params["finalizer"], saliency.shape[-2:], shape, config.cell, config.max_sigma),
                      saliency)


def prefixes(config) -> dict[str, Callable]:
    """Name -> ``f(params, stats, grids, log_cb, counts)`` scalar loss of a prefix of the head on one chunk."""
    import jax.numpy as jnp

    from deepgaze_jax.likelihood import log_likelihood_per_image
    from deepgaze_jax.model import SaliencyHead

    half_square = lambda x: 0.5 * jnp.sum(jnp.square(x))  # noqa: E731
    depth = len(config.readout_features)

    def head(params, stats, grids, log_cb, counts):
        log_density = SaliencyHead(config).apply({"params": params, "stats": stats}, grids,
                                                  jnp.broadcast_to(log_cb, counts.shape))
        return jnp.sum(log_likelihood_per_image(log_density, counts))

    return {
        "layer 0": lambda p, s, g, cb, n: half_square(readout_layers(config, p, s, g, 1)),
        "readout": lambda p, s, g, cb, n: half_square(readout_layers(config, p, s, g, depth)),
        "+ resize and blur": lambda p, s, g, cb, n: half_square(
            upsampled(config, p, readout_layers(config, p, s, g, depth), n.shape[-2:])),
        "+ log-softmax, likelihood": head,
    }


def chunked_gradient(prefix: Callable, groups, data):
    """Jitted ``(states) -> (values, grads)`` of ``prefix`` summed over the groups' chunks for all K models,
    each chunk's value and gradient computed in one pass as in `batched_training.make_model_loss`."""
    import jax

    gradient = jax.value_and_grad(prefix)

    def one_model(params, stats, log_cbs):
        def group_total(group, log_cb):
            split = lambda x: x.reshape(-1, group.chunk, *x.shape[1:])  # noqa: E731

            def body(total, xs):
                return jax.tree_util.tree_map(jax.numpy.add, total, gradient(params, stats, xs[0], log_cb, xs[1])), None

            zero = jax.tree_util.tree_map(jax.numpy.zeros_like, (jax.numpy.zeros(()), params))
            return jax.lax.scan(body, zero, (split(group.grids), split(group.counts)))[0]

        totals = [group_total(group, log_cb) for group, log_cb in zip(groups, log_cbs)]
        return jax.tree_util.tree_map(lambda *xs: sum(xs), *totals)

    return jax.jit(lambda states: jax.vmap(one_model)(states.params, states.stats, data.log_centerbias))


def layer_flops(config, positions: int, models: int) -> tuple[float, float]:
    """(first layer, layers 1-3) FLOPs of value and gradient over ``positions`` grid positions."""
    widths = (CHANNELS, *config.readout_features)
    forward = [2.0 * positions * models * a * b for a, b in zip(widths[:-1], widths[1:])]
    return 2 * forward[0], 3 * sum(forward[1:])


def resize_blur_flops(groups, models: int) -> float:
    """FLOPs of value and gradient of the separable resize + blur (cheaper axis order, 3x the forward)."""
    total = 0.0
    for group in groups:
        n, h, w = group.grids.shape[:3]
        big_h, big_w = group.counts.shape[1:]
        total += n * min(h * w * big_w + h * big_h * big_w, big_h * h * w + big_h * w * big_w)
    return 3 * 2 * total * models


def profile_rows(config, train_config, groups, data, states, repeat: int) -> list[tuple[str, Cost, float]]:
    """(piece, cost, FLOPs) of each piece of the evaluation, then the whole program."""
    import jax

    from deepgaze_jax import batched_training as B

    models = int(np.asarray(states.epoch).shape[0])
    positions = sum(int(np.prod(g.grids.shape[:3])) for g in groups)
    first, rest = layer_flops(config, positions, models)
    flops = {"layer 0": first, "readout": rest, "+ resize and blur": resize_blur_flops(groups, models),
             "+ log-softmax, likelihood": 0.0}
    rows, previous = [], Cost(0.0, 0.0)
    for name, prefix in prefixes(config).items():
        fn = chunked_gradient(prefix, groups, data)
        cost = timed(lambda: jax.block_until_ready(fn(states)), repeat)
        rows.append((name, cost.minus(previous), flops[name]))
        previous = cost
    steps = B.make_batched_steps(config, train_config)
    whole = timed(lambda: jax.block_until_ready(steps.fresh_value_and_grad(states, data, groups)), repeat)
    rows.append(("rest (masks, sums, custom_vjp)", whole.minus(previous), 0.0))
    rows.append(("**one evaluation (real program)**", whole, first + rest + flops["+ resize and blur"]))
    return rows


def subset_rows(config, train_config, groups, data, states, sizes, repeat: int) -> list[list[str]]:
    """Per size b of ``sizes``: the line-search round's evaluation of b of the K models
    (`batched_training.BatchedSteps.evaluate_some`, the models gathered): first call (compilation
    included), then median wall and CPU seconds."""
    import jax

    from deepgaze_jax import batched_training as B

    steps = B.make_batched_steps(config, train_config)
    rows = []
    for size in sizes:
        idx = np.arange(size)
        cost = timed(lambda: jax.block_until_ready(steps.evaluate_some(states.params, states.stats, data, groups, idx)),
                     repeat)
        rows.append([str(size), f"{cost.first_s:.1f}", f"{cost.wall_s:.3g}", f"{cost.cpu_s:.3g}"])
    return rows


def format_rows(rows, peak: float) -> list[list[str]]:
    out = []
    for name, cost, flops in rows:
        rate = flops / cost.wall_s / 1e9 if flops and cost.wall_s > 0 else float("nan")
        out.append([name, f"{cost.wall_s:.2f}", f"{cost.cpu_s:.2f}", f"{cost.first_s:.1f}",
                    f"{flops / 1e9:.1f}" if flops else "-",
                    f"{rate:.1f}" if flops else "-", f"{100 * rate * 1e9 / peak:.0f}%" if flops else "-"])
    return out


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landscape", type=int, default=779, help="images with (24, 32) grids (MIT1003: 779)")
    parser.add_argument("--portrait", type=int, default=224, help="images with (32, 24) grids (MIT1003: 224)")
    parser.add_argument("--models", type=int, default=10, help="K readouts trained at once")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per piece")
    parser.add_argument("--subsets", type=lambda text: [int(b) for b in text.split(",")], default=None,
                        help="instead of the pieces: the evaluation of only b of the K models, for each b of this "
                             "comma-separated list (what a line-search round costs when b models still search)")
    args = parser.parse_args(argv)
    config, train_config, groups, data, states = synthetic_pool(args.landscape, args.portrait, args.models)
    before = load_average()
    if args.subsets:
        title = (f"One line-search round (objective + gradient) of b of {args.models} readouts on {args.landscape} + "
                 f"{args.portrait} Lite0 grids ({groups[0].grids.dtype})")
        rows = subset_rows(config, train_config, groups, data, states, args.subsets, args.repeat)
        notes = [f"Load average before {before}, after {load_average()}.", machine_line()]
        return [table(title, ["models evaluated", "first call s", "wall s", "CPU s (user+sys)"], rows, notes)]
    rows = profile_rows(config, train_config, groups, data, states, args.repeat)
    peak = cpu_peak_flops()
    title = (f"One loss + gradient evaluation of {args.models} readouts on {args.landscape} + {args.portrait} "
             f"Lite0 grids ({groups[0].grids.dtype}, chunks of {groups[0].chunk} images)")
    notes = [f"Peak {peak / 1e9:.0f} GFLOP/s (`benchmarks.cpu_peak_flops`). Load average before {before}, "
             f"after {load_average()}.", machine_line()]
    return [table(title, ["piece", "wall s", "CPU s (user+sys)", "first call s", "GFLOP", "GFLOP/s", "of peak"],
                  format_rows(rows, peak), notes)]


if __name__ == "__main__":
    main()
