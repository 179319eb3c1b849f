"""``deepgaze-jax predict IMAGE... --out DIR``: log densities (.npy) and overlays (.png).

Outputs keep the images' paths relative to the deepest folder holding all of them, so
``predict a/x.jpg b/x.jpg --out o`` writes ``o/a/x_*`` and ``o/b/x_*``; images that
would still share a name (``x.jpg`` and ``x.png``) get their suffix in the name
(``x_png_*``). No output of one image overwrites another's. ``--example`` adds the
photographs shipped with the package (`deepgaze_jax.examples`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepgaze_jax.atomic_file import atomic_path
from deepgaze_jax.model_options import add_model_arguments, models_from_args

DENSITY_SUFFIX = "_log_density.npy"
OVERLAY_SUFFIX = "_density.png"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict fixation densities for images")
    p.add_argument("images", nargs="*", type=Path, help="image files (any format PIL reads)")
    p.add_argument(
        "--example", action="store_true", help="also predict the example photographs shipped with the package"
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    add_model_arguments(p)
    p.add_argument("--centerbias", default=None, help="'uniform' or a .npy log density (default: the model's)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--no-png", action="store_true", help="write only the .npy log densities")
    p.set_defaults(func=run)


def unique_paths(paths: Sequence[Path]) -> list[Path]:
    """The images as normalised absolute paths, each file once, in the order given."""
    absolute = (Path(os.path.normpath(Path(p).absolute())) for p in paths)
    return list(dict.fromkeys(absolute))


def _free_name(relative: Path, suffix: str, taken: set[str]) -> Path:
    """``relative``, else ``relative_<suffix>``, else ``relative_<suffix>_2``, ...: the first not in ``taken``."""
    base = relative.with_name(f"{relative.name}_{suffix}")
    numbered = (base.with_name(f"{base.name}_{k}") for k in itertools.count(2))
    return next(c for c in itertools.chain([relative, base], numbered) if c.as_posix().lower() not in taken)


def output_stems(paths: Sequence[Path]) -> list[Path]:
    """A distinct output name (relative path without suffix) per image of `unique_paths`.

    Names are the paths relative to the deepest common folder; a name taken already
    (compared ignoring case, for case-insensitive file systems) gets the image's suffix
    appended (``x_png``), then a counter (``x_png_2``).
    """
    root = Path(os.path.commonpath([p.parent for p in paths])) if paths else Path()
    taken: set[str] = set()
    stems = []
    for path in paths:
        stem = _free_name(path.relative_to(root).with_suffix(""), path.suffix.lstrip("."), taken)
        taken.add(stem.as_posix().lower())
        stems.append(stem)
    return stems


def _inputs(args: argparse.Namespace) -> list[Path]:
    from deepgaze_jax.examples import example_paths

    return unique_paths([*args.images, *(example_paths() if args.example else [])])


def run(args: argparse.Namespace) -> int:
    from deepgaze_jax.images import ImageError, to_rgb_uint8
    from deepgaze_jax.plotting import save_overlay
    from deepgaze_jax.predict import predict_density

    paths = _inputs(args)
    if not paths:
        print("predict: give image files, or --example for the photographs shipped with the package", file=sys.stderr)
        return 2
    centerbias = args.centerbias
    if centerbias not in (None, "uniform"):
        centerbias = np.load(centerbias, allow_pickle=False)
    model = models_from_args(args)
    failures = 0
    for path, stem in tqdm(list(zip(paths, output_stems(paths))), desc="predict", unit="img"):
        try:
            image = to_rgb_uint8(path)
        except (ImageError, FileNotFoundError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        log_density = predict_density(model, image, centerbias=centerbias)
        target = args.out / stem
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target.with_name(target.name + DENSITY_SUFFIX), suffix=".npy") as tmp:
            np.save(tmp, log_density)
        if not args.no_png:
            save_overlay(image, log_density, target.with_name(target.name + OVERLAY_SUFFIX))
    print(f"wrote {len(paths) - failures} log densities (nats/pixel, .npy) to {args.out}")
    return 1 if failures else 0
