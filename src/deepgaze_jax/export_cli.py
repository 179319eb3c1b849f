"""``deepgaze-jax export --stimuli DIR --out DIR``: maps for the MIT/Tübingen saliency benchmark.

Writes, for every image of ``--stimuli`` (one folder, not recursive):

* ``OUT/with_centerbias/<stem>.jpg``: the density with the model's centre bias, histogram
  equalised (`export.equalize`), for the benchmark's location-based metrics (AUC, NSS, ...);
* ``OUT/without_centerbias/<stem>.jpg``: the same model with a uniform prior, for shuffled
  AUC, which penalises a centre bias (the paper's table 1 scores sAUC on such maps);
* ``OUT/log_densities.hdf5``: the log densities with centre bias (nats, float32, one dataset
  per image file name), the file pysaliency's ``HDF5Model(stimuli, path)`` reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepgaze_jax.model_options import add_model_arguments, models_from_args

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
HDF5_NAME = "log_densities.hdf5"
PRIORS = {"with_centerbias": None, "without_centerbias": "uniform"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="benchmark maps (JPEG, equalised) and an HDF5 of log densities")
    p.add_argument("--stimuli", type=Path, required=True, help="folder of images")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_model_arguments(p)
    p.add_argument("--batch-size", type=int, default=4)
    p.set_defaults(func=run)


def stimulus_names(folder: Path) -> list[str]:
    """Sorted image file names in ``folder``; an error if there are none or two share a stem."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--stimuli {folder} is not a folder")
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    stems = [Path(n).stem for n in names]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ValueError(f"images in {folder} share a stem, so their maps would overwrite each other: {clashes}")
    return names


def log_densities(models, folder: Path, names: list[str], centerbias, batch_size: int):
    """Yields each image's log density (nats), one batch of images decoded at a time."""
    from deepgaze_jax.predict import predict_density

    for start in range(0, len(names), batch_size):
        paths = [folder / n for n in names[start : start + batch_size]]
        yield from predict_density(models, paths, centerbias=centerbias, batch_size=batch_size)


def run(args: argparse.Namespace) -> int:
    from deepgaze_jax.export import export_benchmark, hdf5_log_densities
    from deepgaze_jax.images import ImageError

    try:
        names = stimulus_names(args.stimuli)
        models = models_from_args(args)
        with hdf5_log_densities(args.out / HDF5_NAME) as write:
            for subdir, prior in PRIORS.items():
                densities = log_densities(models, args.stimuli, names, prior, args.batch_size)
                if prior is None:
                    densities = _written(write, names, densities)
                export_benchmark(densities, names, args.out / subdir)
    except (ImageError, OSError, ValueError) as exc:
        print(f"deepgaze-jax export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(names)} maps with and without centre bias to {args.out} and {args.out / HDF5_NAME}")
    return 0


def _written(write, names, densities):
    """Passes ``densities`` through, writing each to the HDF5 file under its image's name."""
    for name, log_density in zip(names, densities):
        write(name, log_density)
        yield log_density
