"""Readout instances of several finished crossvalidation runs pooled into one run.

Runs of one configuration whose instances started apart (e.g. two ``--seeds 3`` runs started from
different pretrainings) are, together, one run with more instances per fold: fold k's model is the
mixture of the runs' fold-k models (`model.mixture`), so its density is the average in probability
of all their instances, and each image is still scored by the instances of the fold that never saw
it. `pool_crossvalidations` writes that run as a crossvalidation working directory like any other
(``setup.json``, per fold ``model.npz``, held-out maps with and without centre bias, ``history.json``
with the pooled instances' stopping-set NLL, ``done.json``; ``mixture.npz``), which
`report.crossval_report` scores and `experiments.ensemble_mit1003` / `experiments.bundle_models`
take like a trained run. Pooling trains nothing: it costs the held-out and stopping-set predictions.

From the command line: ``python -m experiments.pool_instances RUN_A RUN_B --workdir POOLED`` (MIT1003), or
``--config lite0_taps_osie_eye_x6``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from deepgaze_jax.atomic_file import write_atomic
from deepgaze_jax.crossvalidation import (
    CENTERBIAS_TEMPLATE_SIZE, FOLD_OUTPUTS, FoldData, FoldSplit, aligned_setups, check_setup, fold_assignment,
    fold_done, fold_heldout, fold_split, instance_variables, mark_done, stopping_record, write_heldout_maps,
)
from deepgaze_jax.model import DeepGazeParams, ModelConfig, load_model, mixture, save_model

logger = logging.getLogger(__name__)

POOL_SHARED = ("model_config", "training", "num_folds", "seed", "num_images", "num_fixations", "stopping")
"""What the pooled runs must share (their ``setup.json``): the same model, training (but for the initialisation
seed), folds, data and stopping choice."""


def shared_fields(setup: dict) -> dict:
    """The `POOL_SHARED` fields of a run's setup (a trained run's or a pool's); "training" is the train config
    without the initialisation seed."""
    training = setup.get("training") or {k: v for k, v in setup["train_config"].items() if k != "seed"}
    return {k: training if k == "training" else setup.get(k) for k in POOL_SHARED}


def init_seeds(setup: dict) -> list[int]:
    """The initialisation seeds of a run's instances' runs (one for a trained run; a pool's, all of its runs')."""
    return setup["init_seeds"] if "init_seeds" in setup else [setup["train_config"]["seed"]]


def pooled_setup(members: Sequence[Path]) -> dict:
    """The ``setup.json`` of the pool of the finished runs ``members``, or an error naming what differs."""
    setups = aligned_setups(members)
    first = shared_fields(setups[0])
    for member, setup in zip(members[1:], setups[1:]):
        differ = [k for k, v in shared_fields(setup).items() if v != first[k]]
        if differ:
            raise ValueError(f"{member} and {members[0]} differ in {differ}: only runs of one configuration pool "
                             "(for runs of different models, average them with experiments.ensemble_mit1003)")
    return {**first, "seeds": sum(s.get("seeds", 1) for s in setups), "init_seeds": sum(map(init_seeds, setups), []),
            "init": [s.get("init") for s in setups], "pooled_from": [os.path.realpath(m) for m in members]}


def distinct_instances(model: DeepGazeParams, fold: int) -> None:
    """Refuses a pooled fold model two of whose instances are the same (runs started from the same init and seed:
    pooling them would count one model twice)."""
    variables = [np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(v)]) for v in instance_variables(model)]
    for i, a in enumerate(variables):
        for j in range(i + 1, len(variables)):
            if np.array_equal(a, variables[j]):
                raise ValueError(f"fold {fold}'s instances {i} and {j} are the same model: were the runs started from "
                                 "the same pretrained model or the same --init-seed? Pool runs whose instances differ")


CENTERBIAS_ATOL = 1e-5
"""How far (nats) the pooled runs' centre-bias templates may differ: float noise of the same fit, not another fit."""


def same_centerbias(models: Sequence[DeepGazeParams], what: str) -> None:
    """Refuses models whose centre-bias templates differ by more than `CENTERBIAS_ATOL` (the first one's is kept)."""
    first = np.asarray(models[0].centerbias)
    gap = max(float(np.max(np.abs(np.asarray(m.centerbias) - first))) for m in models[1:])
    if not gap <= CENTERBIAS_ATOL:
        raise ValueError(f"the centre biases of {what} differ by up to {gap:.3g} nats: runs made on other fixations, "
                         "folds or centre-bias code do not pool")


def pooled_fold_model(members: Sequence[Path], fold: int) -> tuple[DeepGazeParams, list[int]]:
    """Fold ``fold``'s models of ``members`` as one mixture of all their instances (their centre bias, the same),
    and how many instances each run gave."""
    models = [load_model(m / f"fold_{fold}" / "model.npz", backbone_weights={}) for m in members]
    same_centerbias(models, f"fold {fold}'s models")
    pooled = mixture(models)
    distinct_instances(pooled, fold)
    return pooled, [m.num_components for m in models]


def pool_fold(workdir: Path, members: Sequence[Path], split: FoldSplit, data: FoldData, config: ModelConfig) -> dict:
    """Writes fold ``split.fold`` of the pool (model, held-out maps, history, ``done.json`` last); returns its
    history: the stopping record (`crossvalidation.stopping_record`) of the pooled instances and the runs' histories."""
    fold_dir = workdir / f"fold_{split.fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    model, counts = pooled_fold_model(members, split.fold)
    save_model(model, fold_dir / "model.npz")
    variables, template = instance_variables(model), np.asarray(model.centerbias)
    record = stopping_record(split, template, data, config, variables)
    runs = [json.loads((m / f"fold_{split.fold}" / "history.json").read_text()) for m in members]
    history = {**record, "pooled_from": [os.path.realpath(m) for m in members], "num_instances": model.num_components,
               "runs": runs}
    write_atomic(fold_dir / "history.json", json.dumps(history, indent=1))
    write_heldout_maps(fold_dir, split.heldout, data, config, template, variables)
    check_heldout(workdir, members, split.fold, counts)
    mark_done(fold_dir, FOLD_OUTPUTS)
    return history


HELDOUT_ATOL = 1e-3
"""How far (nats) a pool's recomputed held-out log densities may be from its runs' stored ones averaged in
probability: float32 rounding, not another feature cache or model code."""


def check_heldout(workdir: Path, members: Sequence[Path], fold: int, counts: Sequence[int]) -> None:
    """Refuses a pool fold whose recomputed held-out maps are not its runs' stored maps averaged in probability
    (weighted by the runs' instance ``counts``): the features or the code changed since the runs."""
    weights = np.log(counts)
    stored = [fold_heldout(m, fold) for m in members]
    for i, got in fold_heldout(workdir, fold).items():
        want = logsumexp([w + s[i] for w, s in zip(weights, stored)], axis=0) - logsumexp(weights)
        gap = float(np.max(np.abs(got - want)))
        if not gap <= HELDOUT_ATOL:
            raise ValueError(f"fold {fold}: the pool's held-out map of image {i} is up to {gap:.3g} nats from its runs' "
                             "stored maps: was the feature cache (--cache-dir) or the model code changed since the runs?")


def pooled_mixture(members: Sequence[Path], workdir: Path, num_folds: int) -> DeepGazeParams:
    """The pool's fold models as one mixture with the runs' all-fixation centre bias (``mixture.npz`` of each
    run, the same), saved as ``workdir/mixture.npz``."""
    tops = [load_model(m / "mixture.npz", backbone_weights={}) for m in members]
    same_centerbias(tops, "the runs' mixture.npz")
    folds = [load_model(workdir / f"fold_{k}" / "model.npz", backbone_weights={}) for k in range(num_folds)]
    combined = mixture(folds).replace(centerbias=jnp.asarray(tops[0].centerbias))
    if tuple(combined.centerbias.shape) != CENTERBIAS_TEMPLATE_SIZE:
        raise ValueError(f"{members[0]}/mixture.npz has a centre bias of shape {combined.centerbias.shape}")
    save_model(combined, workdir / "mixture.npz")
    return combined


def check_pool(member_workdirs: Sequence[str | os.PathLike]) -> dict:
    """The setup of the pool of ``member_workdirs``, or an error before any work: fewer than two runs, a run named
    twice, runs that differ (`pooled_setup`) or are unfinished, copies of one run, a run without ``mixture.npz``."""
    members = [Path(w) for w in member_workdirs]
    if len(members) < 2:
        raise ValueError("pooling needs at least two crossvalidation runs")
    if len(set(map(os.path.realpath, members))) < len(members):
        raise ValueError(f"a run is named twice in {[str(m) for m in members]}: its instances would count double")
    setup = pooled_setup(members)
    missing = [str(m / "mixture.npz") for m in members if not (m / "mixture.npz").is_file()]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing: re-run those runs' crossvalidation commands (no retraining)")
    pooled_fold_model(members, 0)  # refuses copies of one run
    return setup


def pool_crossvalidations(
    member_workdirs: Sequence[str | os.PathLike], workdir: str | os.PathLike, data: FoldData,
    log: Callable[[str], None] = logger.info, setup: dict | None = None,
) -> DeepGazeParams:
    """Pools the finished crossvalidation runs ``member_workdirs`` (one configuration, instances started apart)
    into the run ``workdir`` (module docstring) and returns its mixture (also ``workdir/mixture.npz``).

    ``data`` are the runs' feature grids and fixations (for the held-out and stopping-set predictions).
    Resumable: finished folds of ``workdir`` are kept. Each fold's log line gives the pooled instances'
    stopping-set NLL beside each run's (bits/fixation, on a training part). ``setup``: `check_pool`'s of these
    runs when the caller has checked them already (it hashes every run's outputs), else it is made here.
    """
    members = [Path(w) for w in member_workdirs]
    setup = setup or check_pool(members)
    if (setup["num_images"], setup["num_fixations"]) != (data.fixations.num_images, len(data.fixations)):
        raise ValueError(f"the runs were made on {setup['num_images']} images / {setup['num_fixations']} fixations, "
                         f"the data given has {data.fixations.num_images} / {len(data.fixations)}")
    workdir = Path(workdir)
    check_setup(workdir, setup, "pool of runs")
    config = ModelConfig.from_json(json.dumps(setup["model_config"]))
    num_folds = setup["num_folds"]
    folds = fold_assignment(setup["num_images"], num_folds, setup["seed"])
    for fold in range(num_folds):
        if fold_done(workdir, fold):
            log(f"fold {fold}: done, skipping")
            continue
        history = pool_fold(workdir, members, fold_split(folds, fold, num_folds, setup["stopping"]), data, config)
        runs = [run.get("stopping_nll_bits") for run in history["runs"]]
        log(f"fold {fold}: {setup['seeds']} instances pooled, stopping-set NLL {history['stopping_nll_bits']:.4f} "
            f"bits/fix (the runs: {', '.join('?' if r is None else f'{r:.4f}' for r in runs)})")
    return pooled_mixture(members, workdir, num_folds)
