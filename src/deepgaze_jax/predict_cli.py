"""``deepgaze-jax predict IMAGE... --out DIR``: log densities (.npy) and overlays (.png)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepgaze_jax.model_options import add_model_arguments, models_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict fixation densities for images")
    p.add_argument("images", nargs="+", type=Path, help="image files (any format PIL reads)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    add_model_arguments(p)
    p.add_argument("--centerbias", default=None, help="'uniform' or a .npy log density (default: the model's)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--no-png", action="store_true", help="write only the .npy log densities")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deepgaze_jax.images import ImageError, to_rgb_uint8
    from deepgaze_jax.plotting import save_overlay
    from deepgaze_jax.predict import predict_density

    centerbias = args.centerbias
    if centerbias not in (None, "uniform"):
        centerbias = np.load(centerbias, allow_pickle=False)
    model = models_from_args(args)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in tqdm(args.images, desc="predict", unit="img"):
        try:
            image = to_rgb_uint8(path)
        except (ImageError, FileNotFoundError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        log_density = predict_density(model, image, centerbias=centerbias)
        np.save(args.out / f"{path.stem}_log_density.npy", log_density)
        if not args.no_png:
            save_overlay(image, log_density, args.out / f"{path.stem}_density.png")
    print(f"wrote {len(args.images) - failures} log densities (nats/pixel, .npy) to {args.out}")
    return 1 if failures else 0
