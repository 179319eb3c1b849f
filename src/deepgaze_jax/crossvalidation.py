"""The paper's 10-fold crossvalidation over images (section 2.4), resumable.

The images are split into ``folds`` parts with a fixed seed. Fold k predicts part k
(its *held-out* part, the one it is scored on) with the parameters of its best epoch
under the paper's stopping rule (`training.should_stop`). Which part the rule watches is
the ``stopping`` choice (`fold_split`):

* ``"inner"`` (the default for new runs): part (k + 1) mod folds, one of the nine
  training parts; the readout trains on the remaining eight. Part k takes no part in
  training, stopping or the fold's centre bias, so its scores are honest.
* ``"heldout"``: part k itself, the readout training on the nine others: the protocol
  of the figures published before the choice existed (their stopping epoch is picked on
  the scored part, so they are slightly optimistic); kept to reproduce them.

The choice is recorded in ``setup.json``; a working directory written before it existed
holds ``"heldout"`` runs, and resuming a run with the other choice is an error. With
``seeds`` > 1 each fold has that many readout instances (different random initialisations,
or one pretrained model each: `Inits`), averaged in probability. The folds x instances are trained one after the other, or all
at once by one vectorised program (``at_once``, `batched_training`). The centre bias used
by each fold's model is fitted (maximum likelihood, `centerbias.fit_center_bias`) on that
fold's training images only (not on its stopping part); the readout's feature statistics too.

Working directory (everything a re-run needs to skip finished folds and resume
the current one from its last checkpoint)::

    setup.json            configs, seed, fold assignment, stopping choice (a re-run must match it)
    batched/seeds<S>_folds_<k>_..._<m>/checkpoints
                          orbax steps of a vectorised run of those folds (`train_folds_at_once`)
    fold_<k>/checkpoints[_<i>]  orbax steps of instance i when trained fold by fold
    fold_<k>/model.npz    the fold's model (`model.save_model`, a mixture of its instances)
    fold_<k>/heldout.npz  log densities on the density grid of its held-out images
    fold_<k>/heldout_no_cb.npz  the same with a uniform prior in place of the log centre bias
                          (the maps the paper's Table 1 scores shuffled AUC on)
    fold_<k>/history.json losses per epoch, best epoch, stopping part and its NLL, wall times
    fold_<k>/done.json    SHA-256 of the fold's outputs, written last: a fold is finished
                          only when it exists and every output still matches it
    mixture.npz           the ten heads as one mixture model (`model.mixture`)

Held-out results are scored by `report.crossval_report` against the crossvalidated
(leave-one-image-out) centre bias and the gold standard (`baselines.fit_baselines`).
`ensemble_crossvalidation` combines finished runs (e.g. one per backbone) into a
working directory of averaged held-out predictions, scored the same way. A fold finished
before ``heldout_no_cb.npz`` existed gets it from its saved model on the next run (no retraining).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import logging
import os
import math
import time
from pathlib import Path
from typing import Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import batched_training, checkpoints, input_pipeline, training
from deepgaze_jax.atomic_file import atomic_path, write_atomic
from deepgaze_jax.centerbias import fit_center_bias
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.densities import log_mean_density
from deepgaze_jax.likelihood import fixation_counts, log_likelihood_per_image
from deepgaze_jax.model import (
    DeepGazeParams, ModelConfig, SaliencyHead, centerbias_on_grid, load_model, mixture, save_model,
)

logger = logging.getLogger(__name__)

CENTERBIAS_TEMPLATE_SIZE = (256, 256)
Stopping = Literal["inner", "heldout"]
STOPPING: tuple[str, ...] = ("inner", "heldout")
DEFAULT_STOPPING: Stopping = "inner"
UNRECORDED_STOPPING: Stopping = "heldout"  # a setup.json from before the choice: those runs stopped on part k
UNRECORDED_LINE_SEARCH = "zoom"  # a setup.json from before the line-search choice: optax.lbfgs
STOPPING_HELP = ("part each fold k stops on: inner (part k+1, one of its training parts; the default for a new "
                 "workdir) or heldout (the scored part k itself: the old, optimistic protocol); default: the "
                 "workdir's recorded choice")


def fold_assignment(num_images: int, num_folds: int = 10, seed: int = 0) -> np.ndarray:
    """(num_images,) int fold of each image: a seeded permutation cut into near-equal parts."""
    if not 2 <= num_folds <= num_images:
        raise ValueError(f"need 2 <= folds <= {num_images} images, got {num_folds}")
    folds = np.empty(num_images, np.int64)
    folds[np.random.default_rng(seed).permutation(num_images)] = np.arange(num_images) % num_folds
    return folds


def check_stopping(stopping: str, num_folds: int) -> None:
    """Refuses an unknown ``stopping`` choice, and inner stopping with fewer than 3 folds."""
    if stopping not in STOPPING:
        raise ValueError(f"stopping must be one of {', '.join(STOPPING)}, got {stopping!r}")
    if stopping == "inner" and num_folds < 3:
        raise ValueError(
            f"inner stopping needs at least 3 folds (parts to train on, to stop on and to score), got {num_folds}: "
            "use more folds, or stopping 'heldout' (--stopping heldout) for the old protocol"
        )


def stopping_part(fold: int, num_folds: int, stopping: Stopping) -> int:
    """The part fold ``fold`` stops on: ``(fold + 1) % num_folds`` for "inner", ``fold`` itself for "heldout"."""
    return (fold + 1) % num_folds if stopping == "inner" else fold


@dataclasses.dataclass(frozen=True)
class FoldSplit:
    """The images of one fold.

    Attributes:
      fold: the fold, and the part it is scored on; stop_part: the part it stops on.
      train: the images its readout is trained on (and its centre bias and feature statistics fitted on).
      stop: those the stopping rule is evaluated on (part ``stop_part``).
      heldout: those it predicts and is scored on (part ``fold``).
    """

    fold: int
    stop_part: int
    train: np.ndarray
    stop: np.ndarray
    heldout: np.ndarray


def fold_split(folds: np.ndarray, fold: int, num_folds: int, stopping: Stopping) -> FoldSplit:
    """Fold ``fold``'s images by `fold_assignment` ``folds``: held out part ``fold``, stopping on `stopping_part`."""
    stop = stopping_part(fold, num_folds, stopping)
    train = np.flatnonzero((folds != fold) & (folds != stop))
    return FoldSplit(fold, stop, train, np.flatnonzero(folds == stop), np.flatnonzero(folds == fold))


def centerbias_grids(template: np.ndarray, fixations: Fixations, cell: int) -> list[np.ndarray]:
    """Per image, the (H, W) log centre bias on its density grid, from a unit-square template."""
    shapes = {tuple(int(s) // cell for s in size) for size in fixations.image_sizes}
    by_shape = {shape: np.asarray(centerbias_on_grid(template, shape)) for shape in shapes}
    return [by_shape[tuple(int(s) // cell for s in size)] for size in fixations.image_sizes]


@dataclasses.dataclass(frozen=True)
class FoldData:
    """What every fold is trained from.

    Attributes:
      grids: per image, the (h, w, C) cached feature grid.
      fixations: working-space fixations on those images.
    """

    grids: Sequence[np.ndarray]
    fixations: Fixations


PREDICT_BATCH = 32
"""Images per call of the head in `predict_grids` (a batch of one shape, the last one padded)."""


@functools.partial(jax.jit, static_argnums=0)
def _head_log_densities(config: ModelConfig, variables, grids, log_cbs):
    return SaliencyHead(config).apply(variables, grids.astype(jnp.float32), log_cbs)


def predict_grids(config: ModelConfig, variables, grids: Sequence[np.ndarray], log_cbs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """(H, W) float32 log density on the density grid for each (grid, centre bias) pair, in batches of
    at most `PREDICT_BATCH` images of one shape, padded to a power of two (compiled once per shape and size)."""
    out: list[np.ndarray | None] = [None] * len(grids)
    by_shape: dict[tuple, list[int]] = {}
    for i, (grid, log_cb) in enumerate(zip(grids, log_cbs)):
        by_shape.setdefault((np.shape(grid), np.shape(log_cb)), []).append(i)
    for members in by_shape.values():
        for start in range(0, len(members), PREDICT_BATCH):
            batch = members[start:start + PREDICT_BATCH]
            size = input_pipeline.padded_size(len(batch), PREDICT_BATCH)
            stacked = [input_pipeline.stack_padded(arrays, batch, size, arrays[batch[0]].dtype, fill=0)
                       for arrays in (grids, log_cbs)]
            maps = np.asarray(_head_log_densities(config, variables, *stacked))
            for j, i in enumerate(batch):
                out[i] = maps[j]
    return out


def mixture_grids(
    config: ModelConfig, variables: Sequence[dict], grids: Sequence[np.ndarray], log_cbs: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """`predict_grids` of the instances ``variables`` averaged in probability: per image, a float32 log density."""
    per_instance = [predict_grids(config, v, grids, log_cbs) for v in variables]
    return [log_mean_density(list(maps), dtype=np.float32) for maps in zip(*per_instance)]


def uniform_grids(log_cbs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A uniform log density of each centre bias's shape: the prior of the maps without centre bias."""
    return [centerbias_on_grid(None, c.shape) for c in log_cbs]


def nll_bits(log_densities: Sequence[np.ndarray], fixations: Fixations, index: Sequence[int], cell: int) -> float:
    """Mean NLL vs uniform (bits/fix) over the fixations on images ``index``, of their density-grid log densities."""
    total, count = 0.0, 0.0
    for i, log_density in zip(index, log_densities):
        counts = fixation_counts(fixations, [int(i)], log_density.shape, cell)
        total += float(log_likelihood_per_image(log_density[None], counts)[0])
        count += float(counts.sum())
    return -total / max(count, 1.0) / math.log(2)


def initial_head(init: DeepGazeParams) -> tuple[dict, dict]:
    """(params, stats) of the first component of a pretrained model."""
    first = jax.tree_util.tree_map(lambda x: x[0], init.head)
    return first["params"], first["stats"]


Inits = Sequence[DeepGazeParams]
"""The pretrained models the readout instances of every fold start from: none (random inits), one
(every fold's single instance), or one per instance (instance i from the i-th)."""


def check_inits(inits: Inits, seeds: int) -> None:
    """Raises ``ValueError`` saying what to pass unless ``inits`` fits ``seeds`` instances per fold."""
    if len(inits) == 1 and seeds > 1:
        raise ValueError(f"{seeds} instances started from the same pretrained readout are identical: pass one "
                         f"pretrained model per instance ({seeds} --init files, e.g. pretrainings with different "
                         "--init-seed), or use --seeds 1")
    if len(inits) > 1 and len(inits) != seeds:
        raise ValueError(f"{len(inits)} pretrained models for {seeds} instances per fold: pass one per instance "
                         f"(--seeds {len(inits)})")


@dataclasses.dataclass(frozen=True)
class FoldSetup:
    """What fold ``fold``'s models start from.

    Attributes:
      split: its training, stopping and held-out images.
      centerbias: the centre bias fitted on its training images; template: its (256, 256) log density.
      starts: per instance (or one for all of them), the readout's pretrained params (None: a random
        init) and feature statistics (of the fold's training grids, or of the pretrained model).
      setup_s: seconds spent on this setup.
    """

    split: FoldSplit
    centerbias: object
    template: np.ndarray
    starts: tuple[tuple[dict | None, dict], ...]
    setup_s: float

    @property
    def fold(self) -> int:
        return self.split.fold

    def start(self, instance: int) -> tuple[dict | None, dict]:
        """(params or None, stats) that instance ``instance`` starts from."""
        return self.starts[instance if len(self.starts) > 1 else 0]


def fold_setup(
    split: FoldSplit, data: FoldData, feature_sums, inits: Inits = (), fit_cache_dir: str | os.PathLike | None = None
) -> FoldSetup:
    """Fits the fold's centre bias (kept in ``fit_cache_dir``, `fit_cache`), and without ``inits`` the feature
    statistics, on its training images only (``split.train``)."""
    started = time.time()
    centerbias = fit_center_bias(data.fixations.subset_images(split.train), cache_dir=fit_cache_dir)
    starts = (tuple(initial_head(init) for init in inits) if inits
              else ((None, input_pipeline.stats_from_sums(feature_sums, split.train)),))
    return FoldSetup(split, centerbias, centerbias.template(CENTERBIAS_TEMPLATE_SIZE), starts, time.time() - started)


def fold_setups(
    splits: Sequence[FoldSplit], data: FoldData, feature_sums, inits: Inits = (),
    fit_cache_dir: str | os.PathLike | None = None,
) -> list[FoldSetup]:
    """`fold_setup` of every split, on one thread per CPU core (the centre-bias fits are NumPy, which
    releases the GIL in its array loops)."""
    with concurrent.futures.ThreadPoolExecutor(max(1, min(len(splits), os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda split: fold_setup(split, data, feature_sums, inits, fit_cache_dir), splits))


def instance_key(seed: int, fold: int, instance: int) -> jax.Array:
    """PRNG key of readout instance ``instance`` of fold ``fold``: ``PRNGKey(seed + fold)``, folded with the
    instance number for instances after the first."""
    key = jax.random.PRNGKey(seed + fold)
    return key if instance == 0 else jax.random.fold_in(key, instance)


def initial_state(config: ModelConfig, train_config: training.TrainConfig, setup: FoldSetup, instance: int):
    params, stats = setup.start(instance)
    return training.create_train_state(config, train_config, stats, params=params,
                                       key=instance_key(train_config.seed, setup.fold, instance))


def image_inputs(template: np.ndarray, data: FoldData, cell: int, index: Sequence[int]) -> tuple[list, list]:
    """(feature grids, log centre biases on the density grid) of images ``index``, the centre bias from ``template``."""
    all_cbs = centerbias_grids(template, data.fixations, cell)
    return [data.grids[i] for i in index], [all_cbs[i] for i in index]


def write_heldout_maps(
    fold_dir: Path, heldout: Sequence[int], data: FoldData, config: ModelConfig, template: np.ndarray,
    variables: Sequence[dict],
) -> None:
    """Writes the held-out predictions of the instances ``variables`` (averaged in probability), with the
    centre bias ``template`` (``heldout.npz``) and with a uniform prior (``heldout_no_cb.npz``)."""
    grids, log_cbs = image_inputs(template, data, config.cell, heldout)
    write_heldout(fold_dir, heldout, mixture_grids(config, variables, grids, log_cbs))
    write_heldout(fold_dir, heldout, mixture_grids(config, variables, grids, uniform_grids(log_cbs)), HELDOUT_NO_CB)


def stopping_record(
    split: FoldSplit, template: np.ndarray, data: FoldData, config: ModelConfig, variables: Sequence[dict]
) -> dict:
    """The fold's stopping part, its image counts and the NLL on the stopping images (bits/fix) of the instances
    ``variables`` averaged in probability, with the fold's centre bias ``template``."""
    grids, log_cbs = image_inputs(template, data, config.cell, split.stop)
    stop_nll = nll_bits(mixture_grids(config, variables, grids, log_cbs), data.fixations, split.stop, config.cell)
    return {"stopping_part": split.stop_part, "stopping_nll_bits": stop_nll, "num_train_images": len(split.train),
            "num_stopping_images": len(split.stop)}


def write_fold(
    fold_dir: Path, setup: FoldSetup, data: FoldData, config: ModelConfig, states: Sequence[training.TrainState],
    timing: dict,
) -> None:
    """Writes a finished fold: its model (the instances as a mixture), held-out predictions (averaged in
    probability over the instances; with and without centre bias), history, and last ``done.json``."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    variables = [state.head_variables(best=True) for state in states]
    head = jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *variables)
    save_model(DeepGazeParams(backbone_weights={}, head=head, centerbias=jnp.asarray(setup.template), config=config),
               fold_dir / "model.npz")
    histories = [training.history(state) for state in states]
    history = {**histories[0], "epochs": int(states[0].epoch), "setup_s": setup.setup_s, **timing,
               **stopping_record(setup.split, setup.template, data, config, variables),
               "centerbias": {"bandwidth_rel": setup.centerbias.bandwidth, "uniform_weight": setup.centerbias.uniform_weight}}
    if len(states) > 1:
        history["instances"] = [{**h, "epochs": int(s.epoch)} for h, s in zip(histories, states)]
    write_atomic(fold_dir / "history.json", json.dumps(history, indent=1))
    write_heldout_maps(fold_dir, setup.split.heldout, data, config, setup.template, variables)
    mark_done(fold_dir, FOLD_OUTPUTS)


def instance_variables(model: DeepGazeParams) -> list[dict]:
    """The head variables of each of ``model``'s components (readout instances), without the mixture axis."""
    return [jax.tree_util.tree_map(lambda x, m=m: x[m], model.head) for m in range(model.num_components)]


def add_no_centerbias(workdir: Path, split: FoldSplit, data: FoldData, config: ModelConfig) -> None:
    """Writes ``heldout_no_cb.npz`` of a fold finished before it existed, from its saved model, and adds it
    to the fold's ``done.json``."""
    fold_dir = workdir / f"fold_{split.fold}"
    model = load_model(fold_dir / "model.npz", backbone_weights={})
    variables = instance_variables(model)
    grids, log_cbs = image_inputs(np.asarray(model.centerbias), data, config.cell, split.heldout)
    write_heldout(fold_dir, split.heldout, mixture_grids(config, variables, grids, uniform_grids(log_cbs)), HELDOUT_NO_CB)
    mark_done(fold_dir, (*done_outputs(workdir, split.fold), HELDOUT_NO_CB))


def train_fold(
    setup: FoldSetup,
    data: FoldData,
    config: ModelConfig,
    train_config: training.TrainConfig,
    workdir: Path,
    seeds: int = 1,
    dtype: np.dtype = np.float32,
    log: Callable[[str], None] = logger.info,
) -> None:
    """Trains fold ``setup.fold``'s ``seeds`` readout instances one after the other (resuming from their
    checkpoints) and writes the fold (`write_fold`)."""
    fold, fold_dir = setup.fold, workdir / f"fold_{setup.fold}"
    log_cbs = centerbias_grids(setup.template, data.fixations, config.cell)
    train_groups = input_pipeline.make_groups(data.grids, log_cbs, data.fixations, setup.split.train, config.cell, dtype=dtype)
    stop_groups = input_pipeline.make_groups(data.grids, log_cbs, data.fixations, setup.split.stop, config.cell, dtype=dtype)
    fold_config = dataclasses.replace(train_config, seed=train_config.seed + fold)
    steps = training.make_steps(config, fold_config)
    states, started, epochs_run = [], time.time(), 0
    for instance in range(seeds):
        state = initial_state(config, train_config, setup, instance)
        with checkpoints.checkpoint_manager(fold_dir / ("checkpoints" if instance == 0 else f"checkpoints_{instance}")) as manager:
            state = checkpoints.resume(manager, state, f"fold {fold}{f' instance {instance}' if instance else ''}", log)
            before = int(state.epoch)
            state = training.fit(state, train_groups, stop_groups, steps, fold_config, manager, log=log, desc=f"fold {fold}")
        epochs_run += int(state.epoch) - before
        states.append(state)
    train_s = time.time() - started
    write_fold(fold_dir, setup, data, config, states,
               {"train_s": train_s, "s_per_epoch": train_s / max(epochs_run, 1), "trained": "fold by fold"})


def train_folds_at_once(
    setups: Sequence[FoldSetup],
    data: FoldData,
    config: ModelConfig,
    train_config: training.TrainConfig,
    workdir: Path,
    run_dir: Path,
    write: Sequence[int],
    seeds: int = 1,
    dtype: np.dtype = np.float32,
    log: Callable[[str], None] = logger.info,
) -> None:
    """Trains the ``seeds`` instances of every fold of ``setups`` as one vectorised run
    (`batched_training`, checkpoints in ``run_dir``) and writes the folds in ``write`` to ``workdir`` (`write_fold`)."""
    members = [(setup, instance) for setup in setups for instance in range(seeds)]
    names = [f"fold {s.fold}" + (f" instance {i}" if seeds > 1 else "") for s, i in members]
    groups, models = batched_training.make_pool(
        data.grids, data.fixations, [functools.partial(centerbias_on_grid, s.template) for s, _ in members],
        [s.split.train for s, _ in members],
        [s.split.stop for s, _ in members], config.cell, dtype=dtype,
    )
    states = batched_training.stack_states([initial_state(config, train_config, s, i) for s, i in members])
    with checkpoints.checkpoint_manager(run_dir / "checkpoints") as manager:
        states = checkpoints.resume(manager, states, run_dir.name, log)
        log(f"training {len(members)} readouts at once: {', '.join(names)}")
        started, before = time.time(), int(np.max(np.asarray(states.epoch)))
        steps = batched_training.make_batched_steps(config, train_config)
        states = batched_training.fit_many(states, groups, models, steps, train_config, manager, log=log, names=names)
    train_s = time.time() - started
    epochs_run = int(np.max(np.asarray(states.epoch))) - before
    timing = {"train_s": train_s, "s_per_epoch": train_s / max(epochs_run, 1), "trained": f"{len(members)} at once"}
    states = jax.tree_util.tree_map(np.asarray, states)
    for j, setup in enumerate(setups):
        if setup.fold in write:
            fold_states = [batched_training.unstack_state(states, j * seeds + i) for i in range(seeds)]
            write_fold(workdir / f"fold_{setup.fold}", setup, data, config, fold_states, timing)


def batched_run_dir(workdir: Path, pending: Sequence[int], seeds: int) -> tuple[Path, list[int]]:
    """(run directory, its folds) of the vectorised run that trains ``pending``: an earlier run over a
    superset of them (resumed from its checkpoints), else a new one over exactly them."""
    runs = sorted((workdir / "batched").glob(f"seeds{seeds}_folds_*"), key=lambda p: len(p.name))
    for run_dir in runs:
        folds = [int(x) for x in run_dir.name.split("_folds_")[1].split("_")]
        if set(pending) <= set(folds):
            return run_dir, folds
    return workdir / "batched" / f"seeds{seeds}_folds_{'_'.join(map(str, pending))}", list(pending)


HELDOUT = "heldout.npz"
HELDOUT_NO_CB = "heldout_no_cb.npz"
FOLD_OUTPUTS = ("model.npz", "history.json", HELDOUT, HELDOUT_NO_CB)
DONE_NAME = "done.json"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mark_done(fold_dir: Path, names: Sequence[str]) -> None:
    """Writes ``fold_dir/done.json`` (atomically, last): the SHA-256 of each output in ``names``."""
    digests = {name: file_sha256(fold_dir / name) for name in names}
    write_atomic(fold_dir / DONE_NAME, json.dumps({"sha256": digests}, indent=1))


def fold_problem(workdir: Path, fold: int) -> str | None:
    """Why fold ``fold`` is not finished (no ``done.json``, a missing or changed output), or None if it is."""
    fold_dir = workdir / f"fold_{fold}"
    try:
        digests = json.loads((fold_dir / DONE_NAME).read_text())["sha256"]
    except FileNotFoundError:
        return "not finished"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{fold_dir / DONE_NAME} is damaged ({exc})"
    for name, digest in digests.items():
        path = fold_dir / name
        if not path.is_file():
            return f"{path} is missing"
        if file_sha256(path) != digest:
            return f"{path} does not match its digest in {DONE_NAME} (truncated or changed)"
    return None


def fold_done(workdir: Path, fold: int) -> bool:
    """Whether fold ``fold`` is finished with all its outputs intact (`fold_problem`)."""
    return fold_problem(workdir, fold) is None


def done_outputs(workdir: Path, fold: int) -> tuple[str, ...]:
    """The outputs whose digests the ``done.json`` of a finished fold holds."""
    return tuple(json.loads((workdir / f"fold_{fold}" / DONE_NAME).read_text())["sha256"])


def write_heldout(fold_dir: Path, index: Sequence[int], log_densities: Sequence[np.ndarray], name: str = HELDOUT) -> None:
    """Writes ``fold_dir/<name>`` atomically: image indices and their log densities on the density grid."""
    with atomic_path(fold_dir / name, suffix=".npz") as tmp:
        np.savez(tmp, index=np.asarray(index), **{f"image_{int(i)}": h for i, h in zip(index, log_densities)})


def fold_heldout(workdir: Path, fold: int, name: str = HELDOUT) -> dict[int, np.ndarray]:
    """{image index: (H, W) held-out log density on the density grid} of one finished fold (``name``:
    `HELDOUT` with the centre bias, `HELDOUT_NO_CB` with a uniform prior)."""
    with np.load(workdir / f"fold_{fold}" / name) as f:
        return {int(i): f[f"image_{int(i)}"] for i in f["index"]}


def load_heldout(workdir: Path, num_folds: int, name: str = HELDOUT) -> dict[int, np.ndarray]:
    """`fold_heldout` over all folds."""
    return {i: grid for fold in range(num_folds) for i, grid in fold_heldout(workdir, fold, name).items()}


def has_no_centerbias(workdir: Path, num_folds: int) -> bool:
    """Whether every (finished) fold has its held-out maps without centre bias (`HELDOUT_NO_CB`)."""
    return all(HELDOUT_NO_CB in done_outputs(workdir, fold) for fold in range(num_folds))


def load_heldout_no_centerbias(workdir: Path, num_folds: int) -> dict[int, np.ndarray] | None:
    """The held-out log densities without centre bias of a finished run, or None for a run whose folds lack them."""
    return load_heldout(workdir, num_folds, HELDOUT_NO_CB) if has_no_centerbias(workdir, num_folds) else None


def read_setup(workdir: Path) -> dict:
    """``workdir/setup.json``, with an error that says what to do when it is damaged.

    A setup written before the stopping choice existed gets ``"stopping": "heldout"``, the
    protocol of those runs, and one written before the line-search choice ``"line_search": "zoom"``.
    """
    path = workdir / "setup.json"
    try:
        setup = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path} is damaged ({exc}); restore it, or delete {workdir} (or use another --workdir) to start over"
        ) from exc
    setup = {"stopping": UNRECORDED_STOPPING, **setup}
    if "train_config" in setup:  # written before the line-search choice: optax's zoom line search
        setup["train_config"] = {"line_search": UNRECORDED_LINE_SEARCH, **setup["train_config"]}
    return setup


def resolve_stopping(workdir: Path, stopping: Stopping | None) -> Stopping:
    """The stopping choice of a run in ``workdir``: ``stopping`` if given, else the one recorded in its
    ``setup.json``, else `DEFAULT_STOPPING`; a given choice that differs from the recorded one is an error."""
    recorded = read_setup(workdir)["stopping"] if (workdir / "setup.json").is_file() else None
    if stopping is None:
        return recorded or DEFAULT_STOPPING
    if recorded is not None and stopping != recorded:
        raise ValueError(
            f"{workdir} holds a run with stopping {recorded!r} (recorded in its setup.json), not {stopping!r}: "
            f"resume it with --stopping {recorded} (stopping={recorded!r}), or use another --workdir"
        )
    return stopping


def check_setup(workdir: Path, setup: dict, what: str = "crossvalidation run") -> None:
    """Writes ``setup.json``, or checks that an existing one matches (resuming a different ``what`` is an error)."""
    path = workdir / "setup.json"
    text = json.dumps(setup, indent=1, sort_keys=True)
    if path.is_file():
        if read_setup(workdir) != json.loads(text):
            raise ValueError(
                f"{workdir} holds a different {what} ({path}); use another --workdir or delete it"
            )
        return
    write_atomic(path, text)


def run_crossvalidation(
    data: FoldData,
    config: ModelConfig,
    train_config: training.TrainConfig,
    workdir: str | os.PathLike,
    num_folds: int = 10,
    seed: int = 0,
    init: DeepGazeParams | Inits | None = None,
    log: Callable[[str], None] = logger.info,
    seeds: int = 1,
    at_once: bool = False,
    dtype: np.dtype | None = None,
    stopping: Stopping | None = None,
    fit_cache_dir: str | os.PathLike | None = None,
) -> DeepGazeParams:
    """Trains every unfinished fold and returns the mixture of the fold models (also saved as ``mixture.npz``).

    Each fold has ``seeds`` readout instances (averaged in probability), trained one after the
    other (`train_fold`), or with ``at_once`` (L-BFGS only) all together by one vectorised
    program (`train_folds_at_once`; about twice as fast on a 2-core AVX2 CPU, `docs/benchmarks.md`).
    ``init``: the pretrained model every fold's readout starts from, or one per instance (`Inits`).
    ``dtype`` of the grids on device: default `batched_training.resolve_dtype`.
    ``stopping``: the part each fold stops on (module docstring), default `resolve_stopping`
    (the one recorded in ``workdir``, else "inner"). The mixture's centre bias is fitted on
    all fixations (for use on other datasets). ``fit_cache_dir`` keeps the centre-bias fits (`fit_cache`).
    """
    inits = () if init is None else (init,) if isinstance(init, DeepGazeParams) else tuple(init)
    check_inits(inits, seeds)
    workdir = Path(workdir)
    stopping = resolve_stopping(workdir, stopping)
    check_stopping(stopping, num_folds)
    folds = fold_assignment(data.fixations.num_images, num_folds, seed)
    splits = [fold_split(folds, k, num_folds, stopping) for k in range(num_folds)]
    check_setup(
        workdir,
        {
            "model_config": json.loads(config.to_json()),
            "train_config": dataclasses.asdict(train_config),
            "num_folds": num_folds,
            "seed": seed,
            "seeds": seeds,
            "num_images": data.fixations.num_images,
            "num_fixations": len(data.fixations),
            "init": None if not inits else "pretrained" if len(inits) == 1 else f"pretrained, {len(inits)} models",
            "stopping": stopping,
        },
    )
    dtype, why = batched_training.resolve_dtype(dtype)
    if at_once:
        batched_training.check_trainable_at_once(train_config)
    pending = []
    for fold in range(num_folds):
        problem = fold_problem(workdir, fold)
        if problem is None:
            log(f"fold {fold}: done, skipping")
            if HELDOUT_NO_CB not in done_outputs(workdir, fold):
                log(f"fold {fold}: adding its held-out maps without centre bias ({HELDOUT_NO_CB}) from its model")
                add_no_centerbias(workdir, splits[fold], data, config)
        else:
            if problem != "not finished":
                log(f"fold {fold}: {problem}; training it again")
            pending.append(fold)
    if pending:
        log(f"training dtype {dtype.name} on {jax.devices()[0].device_kind} ({why})")
        sums = None if inits else input_pipeline.feature_sums(data.grids)
        if not at_once:
            for fold in pending:
                setup = fold_setup(splits[fold], data, sums, inits, fit_cache_dir)
                log(describe_split(splits[fold]))
                train_fold(setup, data, config, train_config, workdir, seeds, dtype, log)
        else:
            run_dir, run_folds = batched_run_dir(workdir, pending, seeds)
            setups = fold_setups([splits[fold] for fold in run_folds], data, sums, inits, fit_cache_dir)
            train_folds_at_once(setups, data, config, train_config, workdir, run_dir, pending, seeds, dtype, log)
    models = [load_model(workdir / f"fold_{k}" / "model.npz", backbone_weights={}) for k in range(num_folds)]
    template = fit_center_bias(data.fixations, cache_dir=fit_cache_dir).template(CENTERBIAS_TEMPLATE_SIZE)
    combined = mixture(models).replace(centerbias=jnp.asarray(template))
    save_model(combined, workdir / "mixture.npz")
    return combined


def describe_split(split: FoldSplit) -> str:
    """The log line of a fold's split: image counts, and the part it stops on."""
    return (f"fold {split.fold}: training on {len(split.train)} images, stopping on {len(split.stop)} "
            f"(part {split.stop_part}), scoring {len(split.heldout)} (part {split.fold})")


ENSEMBLE_SHARED = ("num_folds", "seed", "num_images", "num_fixations", "stopping")


def ensemble_crossvalidation(
    member_workdirs: Sequence[str | os.PathLike], workdir: str | os.PathLike, log: Callable[[str], None] = logger.info,
) -> dict:
    """Averages, in probability, the held-out predictions of finished crossvalidation runs.

    The runs (e.g. one per backbone) must share folds, seed, data and stopping choice, and the
    density grid (``cell``), so that image i was held out by the same fold in each. Writes
    ``workdir`` as a crossvalidation working directory (``setup.json``, ``fold_<k>/heldout.npz``
    and, when every run has them, the averaged ``heldout_no_cb.npz``) that
    `report.crossval_report` scores like a single run, and returns its setup.
    """
    members = [Path(w) for w in member_workdirs]
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two crossvalidation runs")
    setups = aligned_setups(members)
    first, num_folds = setups[0], setups[0]["num_folds"]
    setup = {**{k: first[k] for k in ENSEMBLE_SHARED}, "ensemble_of": [str(m) for m in members],
             "model_configs": [s["model_config"] for s in setups]}
    workdir = Path(workdir)
    check_setup(workdir, setup)
    names = (HELDOUT, HELDOUT_NO_CB) if all(has_no_centerbias(m, num_folds) for m in members) else (HELDOUT,)
    if len(names) == 1:
        log(f"some runs lack {HELDOUT_NO_CB} (finished before it existed): re-run their crossvalidation command "
            "to add it (no retraining), then the ensemble, for the sAUC without centre bias")
    for fold in range(num_folds):
        for name in names:
            write_fold_average(workdir, members, fold, name)
        mark_done(workdir / f"fold_{fold}", names)
    return setup


def aligned_setups(members: Sequence[Path]) -> list[dict]:
    """The setups of finished runs whose held-out predictions line up (same folds, seed, data, stopping
    choice and density grid), or an error that says which differ or are unfinished."""
    setups = []
    for member in members:
        if not (member / "setup.json").is_file():
            raise FileNotFoundError(f"{member} is not a crossvalidation working directory (no setup.json)")
        setups.append(read_setup(member))
    first = setups[0]
    for member, setup in zip(members[1:], setups[1:]):
        differ = [k for k in ENSEMBLE_SHARED if setup.get(k) != first.get(k)]
        differ += [f"model_config.{k}" for k in ("cell", "long_side") if setup["model_config"][k] != first["model_config"][k]]
        if differ:
            raise ValueError(f"{member} and {members[0]} differ in {differ}: their held-out predictions do not line up")
    unfinished = [f"{m}/fold_{k}" for m in members for k in range(first["num_folds"]) if not fold_done(m, k)]
    if unfinished:
        raise ValueError(f"unfinished folds {unfinished[:3]}{'...' if len(unfinished) > 3 else ''}: finish those runs first")
    return setups


def select_folds(picks: Sequence[str | os.PathLike], workdir: str | os.PathLike) -> dict:
    """A crossvalidation working directory whose fold k is fold k of the finished run ``picks[k]``.

    The held-out maps (with and without centre bias) of each fold are copied from its pick, so
    `report.crossval_report` scores the outcome of a per-fold choice (e.g. `experiments.model_search`:
    each fold's pick made on its own stopping part). The runs must line up as for an ensemble and
    have one pick per fold; returns the setup written.
    """
    picks = [Path(w) for w in picks]
    distinct = list(dict.fromkeys(picks))
    setups = aligned_setups(distinct)
    first = setups[0]
    if len(picks) != first["num_folds"]:
        raise ValueError(f"{len(picks)} picks for {first['num_folds']} folds: give one run per fold")
    names = (HELDOUT, HELDOUT_NO_CB) if all(has_no_centerbias(m, len(picks)) for m in distinct) else (HELDOUT,)
    setup = {**{k: first[k] for k in ENSEMBLE_SHARED}, "picks": [str(m) for m in picks],
             "model_configs": [s["model_config"] for s in setups]}
    workdir = Path(workdir)
    check_setup(workdir, setup)
    for fold, pick in enumerate(picks):
        for name in names:
            heldout = fold_heldout(pick, fold, name)
            write_heldout(workdir / f"fold_{fold}", sorted(heldout), [heldout[i] for i in sorted(heldout)], name)
        mark_done(workdir / f"fold_{fold}", names)
    return setup


def write_fold_average(workdir: Path, members: Sequence[Path], fold: int, name: str) -> None:
    """Writes ``workdir/fold_<fold>/<name>``: the members' held-out maps ``name`` averaged in probability."""
    heldouts = [fold_heldout(m, fold, name) for m in members]
    index = sorted(heldouts[0])
    if any(sorted(h) != index for h in heldouts[1:]):
        raise ValueError(f"fold {fold} holds out different images in {members}")
    write_heldout(workdir / f"fold_{fold}", index,
                  [log_mean_density([h[i] for h in heldouts], dtype=np.float32) for i in index], name)
