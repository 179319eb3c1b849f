"""Scaling of the training step over devices, on cached features.

Two measures: the full-batch loss + gradient (the unit of work of every optimiser
step: the loss of `likelihood.make_loss_fn`, shard-mapped over the mesh axis "data", under
``jax.value_and_grad``), and one epoch of `training.make_steps(...).train_epoch`
(L-BFGS: one iteration with its line search), always from the initial state so that
every timed call does the same number of evaluations. Data: feature grids shaped like MIT1003's in the paper's
working space (MIT1003 has 779 landscape 24 x 32 and 224 portrait 32 x 24 grids of Lite0's
432 channels, float16, ~100 fixations per image; ``--images`` keeps that mix), random values (speed does not depend on
them), so the benchmark runs where the dataset is absent (GPU machines).

On CPU each device count runs in its own process with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (N host "devices" share the
same cores, so this shows the overhead of sharding, not a speed-up). On GPUs it runs on
1, 2, 4, ... up to every GPU present.

    python -m benchmarks.scaling [--devices 1,2,4] [--images 1003] [--repeat 4]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from benchmarks import Timing, isolated, machine_line, measure, table, with_xla_flag

SHAPES = {(24, 32): 779, (32, 24): 224}  # MIT1003: landscape / portrait working images, grid stride 16
CHANNELS = 432  # Lite0 taps stage5 + stage7
FIXATIONS_PER_IMAGE = 104


def synthetic_groups(config, devices: int, images: int, seed: int = 0):
    """Sharded `ShapeGroup`s and feature stats for ``images`` images shaped like MIT1003's (random values)."""
    from deepgaze_jax import input_pipeline as I
    from deepgaze_jax.data.fixations import Fixations

    rng = np.random.default_rng(seed)
    stride = config.grid_stride()
    grids, sizes = [], []
    total = sum(SHAPES.values())
    for shape, count in SHAPES.items():
        for _ in range(round(count * images / total)):
            grids.append(rng.standard_normal((*shape, CHANNELS)).astype(np.float16))
            sizes.append((shape[0] * stride, shape[1] * stride))
    sizes = np.asarray(sizes)
    n = np.repeat(np.arange(len(grids)), FIXATIONS_PER_IMAGE)
    x = rng.uniform(0, sizes[n, 1])
    y = rng.uniform(0, sizes[n, 0])
    fixations, _ = Fixations.create(x, y, n, [tuple(s) for s in sizes])
    cell = config.cell
    log_cbs = [np.full((h // cell, w // cell), -math.log(h * w / cell**2), np.float32) for h, w in sizes]
    everything = list(range(len(grids)))
    mesh = I.data_mesh()
    assert mesh.shape[I.DATA_AXIS] == devices, (mesh.shape, devices)
    return I.make_groups(grids, log_cbs, fixations, everything, cell, mesh), I.feature_stats(grids, everything[:64])


def step_run(devices: int, images: int, repeat: int) -> dict:
    """Seconds per full-batch loss + gradient and per L-BFGS epoch on ``devices`` devices (run by `isolated`).

    The L-BFGS epoch starts from the same (initial) state every time, so each timed call
    does the same number of line-search evaluations.
    """
    import jax

    from deepgaze_jax import input_pipeline as I
    from deepgaze_jax import training as T
    from deepgaze_jax.likelihood import make_loss_fn
    from deepgaze_jax.model import ModelConfig

    config = ModelConfig()
    groups, stats = synthetic_groups(config, devices, images)
    train_config = T.TrainConfig()
    state = T.create_train_state(config, train_config, stats)
    value_and_grad = jax.jit(jax.value_and_grad(make_loss_fn(config, I.data_mesh())))
    gradient = measure(lambda: jax.block_until_ready(value_and_grad(state.params, stats, groups)), repeat)
    steps = T.make_steps(config, train_config)
    epoch = measure(lambda: jax.block_until_ready(steps.train_epoch(state, groups)), max(1, repeat // 2))
    kind = jax.devices()[0]
    return {
        "gradient": gradient.to_json(), "epoch": epoch.to_json(), "device": kind.device_kind, "platform": kind.platform
    }


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default=None, help="device counts (default: 1,2,4 on CPU; 1,2,.. all GPUs)")
    parser.add_argument("--repeat", type=int, default=4, help="timed gradients (L-BFGS epochs: half as many)")
    parser.add_argument("--images", type=int, default=256, help="images (1003: MIT1003's size)")
    args = parser.parse_args(argv)
    import jax

    platform = jax.default_backend()
    available = jax.device_count()
    if args.devices:
        counts = [int(c) for c in args.devices.split(",")]
    elif platform == "cpu":
        counts = [1, 2, 4]
    else:
        counts = [c for c in (1, 2, 4, 8, 16) if c <= available]
    rows, base = [], None
    for count in counts:
        if platform == "cpu":
            env = with_xla_flag(f"--xla_force_host_platform_device_count={count}")
        else:
            env = {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(count))}
        r = isolated("benchmarks.scaling:step_run", env, devices=count, images=args.images, repeat=args.repeat)
        gradient, epoch = Timing(tuple(r["gradient"])), Timing(tuple(r["epoch"]))
        base = base or (gradient.median, epoch.median)
        rows.append([
            count, f"{r['platform']} ({r['device']})", gradient.seconds(), f"{base[0] / gradient.median:.2f}x",
            epoch.seconds(), f"{base[1] / epoch.median:.2f}x",
        ])
    return [
        table(
            f"Training step scaling on cached MIT1003-shaped features ({args.images} images, Lite0 grids)",
            ["devices", "device kind", "loss + gradient, all images", "speed-up", "L-BFGS epoch from init",
             "speed-up"],
            rows,
            notes=[
                "CPU 'devices' are forced host platform devices sharing the same cores."
                if platform == "cpu" else f"{available} GPU(s) present.",
                f"Machine: {machine_line()}.",
            ],
        )
    ]


if __name__ == "__main__":
    main()
