"""Pretraining the readout on OSIE (the paper's SALICON phase, section 2.4, on obtainable data).

    python -m experiments.pretrain_osie --workdir runs/pretrain_osie           # mouse (AMT) pseudo-fixations
    python -m experiments.pretrain_osie --fixations both --workdir runs/pretrain_osie_both
    python -m experiments.crossval_mit1003 --init runs/pretrain_osie/model.npz --workdir runs/crossval_osie

OSIE (`data.osie`, 700 images of 800 x 600, found in ``--data-dir``, else
``$DEEPGAZE_JAX_OSIE``, else ``shared/datasets/osie``) has eye fixations of 15 observers
and SALICON-style mouse tracking, which `data.mouse_fixations` turns into
pseudo-fixations. The readout is trained on the mouse pseudo-fixations (``--fixations
mouse``, source ``--mouse-source``), the eye fixations (``eye``) or both, of 90% of the
images; the stopping rule is evaluated on the *eye* fixations of the other 10% (one part
of a seeded 10-way split, ``--split-seed``), so no MIT1003 image, which the
crossvalidation later scores, is seen before fine-tuning. Images go to the paper's
working size (512 x 384). The training part has the centre bias of its training
fixations (fitted on at most 150 per image, `pretraining.thinned`), the stopping part
that of the eye fixations of the training images. Training,
outputs (``model.npz``, ``history.json``) and resuming: `experiments.pretraining`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from deepgaze_jax.crossvalidation import fold_assignment
from deepgaze_jax.data import datasets, osie
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.feature_cache import cached_feature_grids
from experiments import configs, pretraining

log = logging.getLogger("pretrain_osie").info

STOP_PARTS = 10  # the stopping set is one part in ten of the images
CENTERBIAS_FIXATIONS_PER_IMAGE = 150  # about OSIE's eye fixations per image (140); mouse has 1,350
FIXATIONS = ("mouse", "eye", "both")


def concatenate(a: Fixations, b: Fixations) -> Fixations:
    """The fixations of ``a`` and ``b`` (on the same images) together, ``b``'s subjects numbered after ``a``'s
    (names and durations are dropped: mouse pseudo-fixations have none)."""
    fixations, _ = Fixations.create(
        np.concatenate([a.x, b.x]), np.concatenate([a.y, b.y]), np.concatenate([a.n, b.n]), a.image_sizes,
        subject=np.concatenate([a.subject, np.where(b.subject >= 0, b.subject + a.num_subjects, -1)]),
    )
    return fixations


def stop_split(num_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, stop) image indices: the stop images are part 0 of a seeded `STOP_PARTS`-way split."""
    part = fold_assignment(num_images, STOP_PARTS, seed)
    return np.flatnonzero(part != 0), np.flatnonzero(part == 0)


def load_osie(root: Path | None, source: str) -> tuple[list[np.ndarray], Fixations, Fixations]:
    """OSIE's images at working size, its eye fixations and its mouse pseudo-fixations there."""
    eye = osie.osie_eye(root)
    mouse = osie.osie_mouse(root, source, progress=True)
    if mouse.stimulus_names != eye.stimulus_names:
        raise ValueError(f"OSIE mouse {source} and eye fixations list different images under {osie.find_osie_root(root)}")
    images, eye_fixations = datasets.to_working_space(eye, mode="paper")
    return images, eye_fixations, mouse.fixations.rescaled(eye_fixations.image_sizes)


def training_fixations(choice: str, eye: Fixations, mouse: Fixations) -> Fixations:
    """The fixations to train on: ``choice`` one of `FIXATIONS`."""
    return {"mouse": lambda: mouse, "eye": lambda: eye, "both": lambda: concatenate(mouse, eye)}[choice]()


def parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    configs.add_model_and_training_args(parser)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="OSIE folder (default: $DEEPGAZE_JAX_OSIE, else discovered)")
    parser.add_argument("--fixations", default="mouse", choices=FIXATIONS, help="what to train on (stopping: always eye)")
    parser.add_argument("--mouse-source", default="amt", choices=tuple(osie.MOUSE_SOURCES),
                        help="amt: 835 Mechanical Turk workers; lab: 16 lab participants")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the 90/10 split into training and stopping images")
    parser.add_argument("--workdir", type=Path, default=Path("runs/pretrain_osie"))
    return parser, configs.parse_args(parser, argv)


def main(argv: list[str] | None = None) -> Path:
    parser, args = parse(argv)
    configs.start(args)
    config = configs.model_config_of(args)
    try:
        images, eye, mouse = load_osie(args.data_dir, args.mouse_source)
    except FileNotFoundError as exc:
        parser.exit(1, f"pretrain_osie: {exc}\nPass --data-dir /path/to/osie or set {osie.OSIE_ENV}.\n")
    grids = cached_feature_grids(images, config, config.get_backbone().load_weights(), args.cache_dir)
    del images
    train_idx, stop_idx = stop_split(len(grids), args.split_seed)
    train_eye = eye.subset_images(train_idx)
    train_fixations = training_fixations(args.fixations, train_eye, mouse.subset_images(train_idx))
    train = pretraining.make_part([grids[i] for i in train_idx], train_fixations,
                                  pretraining.thinned(train_fixations, CENTERBIAS_FIXATIONS_PER_IMAGE))
    stop = pretraining.make_part([grids[i] for i in stop_idx], eye.subset_images(stop_idx),
                                 centerbias_fixations=train_eye)
    setup = {"dataset": "osie", "fixations": args.fixations, "mouse_source": args.mouse_source,
             "split_seed": args.split_seed, "stop_images": stop_idx.tolist()}
    path, _ = pretraining.pretrain(train, stop, config, configs.train_config(args), args.workdir, setup, log,
                                   f"OSIE {args.fixations}", "held-out OSIE eye")
    return path


if __name__ == "__main__":
    main()
