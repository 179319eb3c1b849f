"""Crossvalidated training on one dataset, from its images to a model file and a report.

The pipeline shared by ``deepgaze-jax train`` (any dataset) and the MIT1003 experiments:
images to working space, frozen backbone grids from the feature cache, the readout trained
fold by fold (`crossvalidation.run_crossvalidation`, resumable; by default each fold stops
on an inner part of its training parts), the held-out predictions scored and drawn
(`write_report`). Every figure of the report comes from images that the scoring model never
saw; the shuffled AUC is given with and without the centre bias.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

from deepgaze_jax import crossvalidation, fit_cache
from deepgaze_jax.atomic_file import write_atomic
from deepgaze_jax.data import datasets
from deepgaze_jax.data.datasets import Dataset, Mode
from deepgaze_jax.feature_cache import cached_feature_grids
from deepgaze_jax.metrics import SAUC_NO_CENTERBIAS
from deepgaze_jax.model import DeepGazeParams, ModelConfig, bundled_members, load_model
from deepgaze_jax.training import TrainConfig

logger = logging.getLogger(__name__)


INIT_FIELDS = ("backbone", "resolved_taps", "readout_features", "readout_kind", "cell", "long_side")
"""What a model to start from must share with the run's `ModelConfig` (taps as resolved)."""


def _init_field(config: ModelConfig, field: str):
    value = getattr(config, field)
    return value() if callable(value) else value


def load_init(path: str | os.PathLike, config: ModelConfig) -> DeepGazeParams:
    """The model ``path`` (a file, or one bundled name such as ``lite0``) to start the readout from.

    It must be one model (not an ensemble) and match ``config`` in every field of `INIT_FIELDS`;
    the error names the fields that differ.
    """
    members = bundled_members(str(path))
    if members is not None and len(members) > 1:
        raise ValueError(
            f"--init {path} is an ensemble of {len(members)} models ({'+'.join(members)}); --init takes one "
            "model: one bundled name (e.g. lite0) or a model file"
        )
    init = load_model(path, backbone_weights={})
    differ = [f for f in INIT_FIELDS if _init_field(init.config, f) != _init_field(config, f)]
    if differ:
        found = ", ".join(f"{f} {_init_field(init.config, f)!r} (run: {_init_field(config, f)!r})" for f in differ)
        raise ValueError(
            f"--init {path} is a {init.config.backbone} model that differs from this run in {found}: pass the "
            "same --backbone, --readout and --taps as the model was trained with"
        )
    return init


def fold_data(
    dataset: Dataset, config: ModelConfig, cache_dir: str | os.PathLike, mode: Mode = "paper",
    log: Callable[[str], None] = logger.info,
) -> tuple[crossvalidation.FoldData, float]:
    """``dataset``'s feature grids of ``config`` (from the feature cache in ``cache_dir``, built where missing) and
    its fixations, both in the working space of ``mode``; and the seconds the grids took."""
    images, fixations = datasets.to_working_space(dataset, mode=mode)
    started = time.time()
    grids = cached_feature_grids(images, config, config.get_backbone().load_weights(), cache_dir)
    cache_s = time.time() - started
    log(f"feature grids ready in {cache_s:.0f} s: {len(grids)} x {grids[0].shape} {grids[0].dtype}")
    return crossvalidation.FoldData(grids, fixations), cache_s


def write_report(
    workdir: Path, dataset: Dataset, fixations, cell: int, num_folds: int, seed: int, title: str,
    mode: Mode = "paper", fit_cache_dir: str | os.PathLike | None = None, **extra,
) -> dict:
    """Scores ``workdir``'s held-out predictions, draws the figures, writes ``report.json`` / ``report.md``.

    ``fixations`` are ``dataset``'s in the working space of ``mode``; ``extra`` (the command,
    timings) is stored in the report as given; ``fit_cache_dir`` keeps the baselines' fits (`fit_cache`).
    """
    from deepgaze_jax import report as reports

    no_centerbias = crossvalidation.load_heldout_no_centerbias(workdir, num_folds)
    report = reports.crossval_report(workdir, fixations, dataset.image_sizes, cell, num_folds, seed,
                                     heldout_no_centerbias=no_centerbias, fit_cache_dir=fit_cache_dir)
    report.update(extra)
    sizes = datasets.working_sizes(dataset.image_sizes, mode=mode)
    report["figures"] = reports.write_figures(
        workdir, report, lambda i: dataset.load_image(i, size=tuple(sizes[i])), fixations, cell
    )
    write_atomic(workdir / "report.json", json.dumps(report, indent=1))
    write_atomic(workdir / "report.md", reports.report_markdown(report, title))
    overall = report["overall"]
    no_cb = f" (without centre bias {overall[SAUC_NO_CENTERBIAS]:.4f})" if SAUC_NO_CENTERBIAS in overall else ""
    logger.info(
        f"held-out ({report['stopping']} stopping): LL {overall['ll_bits']:.3f} bits/fix, IG {overall['ig_bits']:.3f} "
        f"bits/fix, IG explained {overall['ig_explained_pct']:.1f}%, AUC {overall['auc']:.4f}, "
        f"sAUC {overall['sauc']:.4f}{no_cb}; report in {workdir / 'report.md'}"
    )
    return report


def crossvalidate_dataset(
    dataset: Dataset,
    config: ModelConfig,
    train_config: TrainConfig,
    workdir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    title: str,
    num_folds: int = 10,
    fold_seed: int = 0,
    init: DeepGazeParams | crossvalidation.Inits | None = None,
    mode: Mode = "paper",
    command: dict | None = None,
    log: Callable[[str], None] = logger.info,
    **options,
) -> tuple[DeepGazeParams, dict]:
    """Trains (or resumes) the ``num_folds`` fold models of ``dataset``; returns their mixture and the report.

    The feature grids and the baselines' fits (`fit_cache`, in ``cache_dir/fits``) are kept in ``cache_dir``.
    The mixture (`crossvalidation.run_crossvalidation`: the fold models averaged in
    probability, with a centre bias fitted on all fixations) is also ``workdir/mixture.npz``.
    ``options`` go to `crossvalidation.run_crossvalidation` (``seeds``, ``at_once``, ``dtype``,
    ``stopping``: "inner" or "heldout", default the workdir's recorded choice, else "inner").
    """
    if num_folds < 2 or num_folds > len(dataset):
        raise ValueError(f"--folds must be between 2 and the number of images ({len(dataset)}), got {num_folds}")
    workdir = Path(workdir)
    started = time.time()
    data, cache_s = fold_data(dataset, config, cache_dir, mode, log)
    fits = Path(cache_dir) / fit_cache.SUBDIR
    mixture = crossvalidation.run_crossvalidation(
        data, config, train_config, workdir,
        num_folds=num_folds, seed=fold_seed, init=init, log=log, fit_cache_dir=fits, **options,
    )
    report = write_report(
        workdir, dataset, data.fixations, config.cell, num_folds, fold_seed, title, mode=mode,
        command=command or {}, cache_s=cache_s, total_s=time.time() - started, fit_cache_dir=fits,
    )
    return mixture, report
