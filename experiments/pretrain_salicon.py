"""Pretraining the readout on SALICON, with MIT1003 as the stopping set (paper, section 2.4).

    python -m experiments.pretrain_salicon --salicon-dir /data/salicon
    python -m experiments.crossval_mit1003 --init runs/pretrain_salicon/model.npz

SALICON is read through the TFDS builder (`data.tfds_builders.Salicon`): it is built
once as array_record under ``--tfds-dir`` from the official release under
``--salicon-dir`` (without it the builder fails with download instructions). The
builder's images are SALICON's 640 x 480 downsampled by 2, like MIT1003's working
space; their sides are rounded to multiples of 32 (320 x 240 -> 320 x 256, fixations
rescaled with them) so that the backbone's grids align. The readout starts from a
random init and is trained on all SALICON images (train and validation splits),
each dataset with its own maximum-likelihood centre bias; the stopping rule is
evaluated on all of MIT1003. The SALICON grids stay float16 on device (15,000
grids of 16 x 20 x 432: 4 GB). Training, outputs and resuming: `experiments.pretraining`.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from deepgaze_jax import images as image_ops
from deepgaze_jax.data import datasets, mit1003
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.data.tfds_builders import prepare
from deepgaze_jax.feature_cache import cached_feature_grids
from experiments import configs, pretraining

log = logging.getLogger("pretrain_salicon").info


def load_tfds_split(source, splits=("train", "validation")) -> tuple[list[np.ndarray], Fixations]:
    """Images (sides rounded to multiples of 32) and fixations of ``splits`` of a TFDS fixation source."""
    images, xs, ys, ns, subjects, sizes = [], [], [], [], [], []
    for split in splits:
        for example in source[split]:
            image = np.asarray(example["image"])
            h, w = image.shape[:2]
            long_side = -(-max(h, w) // image_ops.SIZE_MULTIPLE) * image_ops.SIZE_MULTIPLE  # rounded up
            size = image_ops.working_size(h, w, long_side=long_side)
            images.append(image_ops.resize(image, size))
            xs.append(np.asarray(example["x"], np.float64) / w * size[1])
            ys.append(np.asarray(example["y"], np.float64) / h * size[0])
            ns.append(np.full(len(example["x"]), len(sizes)))
            subjects.append(np.asarray(example["subject"]))
            sizes.append(size)
    fixations, _ = Fixations.create(
        np.concatenate(xs), np.concatenate(ys), np.concatenate(ns), sizes,
        subject=np.concatenate(subjects), on_invalid="drop",
    )
    return images, fixations


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    configs.add_model_and_training_args(parser)
    parser.add_argument("--salicon-dir", type=Path, default=None, help="SALICON release (manual_dir of the builder)")
    parser.add_argument("--edition", default="2017", choices=("2015", "2017"))
    parser.add_argument("--tfds-dir", type=Path, default=Path("cache/tfds"), help="where the array_record build goes")
    parser.add_argument("--mit1003-dir", type=Path, default=None, help="MIT1003 root, the stopping set (default: discovered)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/pretrain_salicon"))
    args = configs.parse_args(parser, argv)
    configs.start(args)
    config = configs.model_config_of(args)
    train_config = configs.train_config(args)

    try:
        prepare(f"salicon/{args.edition}", args.tfds_dir, manual_dir=args.salicon_dir)
    except FileNotFoundError as exc:
        parser.exit(1, f"pretrain_salicon: {exc}\n")
    salicon_images, salicon_fixations = load_tfds_split(tfds.data_source(f"salicon/{args.edition}", data_dir=os.fspath(args.tfds_dir)))
    mit = mit1003.mit1003(args.mit1003_dir)
    mit_images, mit_fixations = datasets.to_working_space(mit, mode="paper")
    weights = config.get_backbone().load_weights()
    salicon_grids = cached_feature_grids(salicon_images, config, weights, args.cache_dir)
    mit_grids = cached_feature_grids(mit_images, config, weights, args.cache_dir)
    del salicon_images, mit_images

    train = pretraining.make_part(salicon_grids, salicon_fixations, dtype=np.float16)
    stop = pretraining.make_part(mit_grids, mit_fixations)
    path, _ = pretraining.pretrain(train, stop, config, train_config, args.workdir, {"dataset": f"salicon/{args.edition}"},
                                   log, "SALICON", "MIT1003")
    return path


if __name__ == "__main__":
    main()
