"""``deepgaze-jax plot``: the paper's pictures (figs. 5 and 6) for one image.

    deepgaze-jax plot IMAGE [--fixations-npy F.npy] --model M --out DIR
    deepgaze-jax plot --stimuli DIR --fixations fixations.mat --index I --model M --out DIR

writes ``<name>_density.png`` (the density with its equal-mass contours) and, when human
fixations are given, ``<name>_samples.png`` (as many fixations sampled from the model
beside them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from deepgaze_jax.model_options import model_help


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plot", help="density contours and model samples vs human fixations for one image")
    p.add_argument("image", nargs="?", type=Path, help="image file (or use --stimuli/--fixations/--index)")
    p.add_argument("--fixations-npy", type=Path, help="(N, 2) array of x, y pixel coordinates (0-based) on IMAGE")
    p.add_argument("--stimuli", type=Path, help="folder of the dataset's images")
    p.add_argument("--fixations", type=Path, help="the dataset's NUS-layout fixations.mat (as MIT1003's)")
    p.add_argument("--index", type=int, help="which image of the dataset (0-based, in fixations.mat's order)")
    p.add_argument("--model", default="default", help=model_help())
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed of the model samples")
    p.set_defaults(func=run)


def _from_dataset(args: argparse.Namespace) -> tuple[str, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    from deepgaze_jax.data.nus_mat import load_nus_mat

    dataset = load_nus_mat(args.stimuli, args.fixations, on_invalid="drop")
    if not 0 <= args.index < len(dataset):
        raise ValueError(f"--index {args.index} out of range: the dataset has {len(dataset)} images")
    on_image = dataset.fixations.select(dataset.fixations.n == args.index)
    return dataset.stimuli[args.index].stem, dataset.load_image(args.index), (on_image.x, on_image.y)


def _from_files(args: argparse.Namespace) -> tuple[str, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    from deepgaze_jax.data.fixations import Fixations
    from deepgaze_jax.images import to_rgb_uint8

    image = to_rgb_uint8(args.image)
    if args.fixations_npy is None:
        return args.image.stem, image, None
    xy = np.load(args.fixations_npy, allow_pickle=False)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"{args.fixations_npy} must hold an (N, 2) array of x, y, got shape {xy.shape}")
    fixations, _ = Fixations.create(xy[:, 0], xy[:, 1], np.zeros(len(xy), np.int64), [image.shape[:2]])
    return args.image.stem, image, (fixations.x, fixations.y)


def run(args: argparse.Namespace) -> int:
    import jax

    from deepgaze_jax.model import load_model
    from deepgaze_jax.plotting import plot_samples, save_overlay
    from deepgaze_jax.predict import predict_density

    dataset_args = (args.stimuli, args.fixations, args.index)
    use_dataset = any(a is not None for a in dataset_args)
    if use_dataset and (any(a is None for a in dataset_args) or args.image or args.fixations_npy):
        print("give either IMAGE [--fixations-npy F] or all of --stimuli, --fixations, --index", file=sys.stderr)
        return 2
    if not use_dataset and args.image is None:
        print("give an IMAGE, or --stimuli, --fixations and --index", file=sys.stderr)
        return 2
    try:
        name, image, fixations = _from_dataset(args) if use_dataset else _from_files(args)
        model = load_model(args.model)
    except (FileNotFoundError, ValueError) as exc:  # ImageError, FixationError, DatasetFormatError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log_density = predict_density(model, image)
    args.out.mkdir(parents=True, exist_ok=True)
    written = [save_overlay(image, log_density, args.out / f"{name}_density.png")]
    if fixations is not None and len(fixations[0]) == 0:
        print(f"no fixations on {name}: no samples picture", file=sys.stderr)
    elif fixations is not None:
        key = jax.random.PRNGKey(args.seed)
        written.append(plot_samples(image, log_density, fixations, key, args.out / f"{name}_samples.png"))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
