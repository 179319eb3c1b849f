"""The paper's 10-fold crossvalidation over images (section 2.4), resumable.

The images are split into ``folds`` parts with a fixed seed. For fold k the
readout is trained on the other parts; the stopping rule (`training.should_stop`)
is evaluated on part k, and part k is then predicted by the best parameters, so
every image is predicted by a model that never saw it. With ``seeds`` > 1 each fold
has that many readout instances (different initialisations), averaged in
probability. The folds x instances are trained one after the other, or all at
once by one vectorised program (``at_once``, `batched_training`). The centre bias used by
each fold's model is fitted (maximum likelihood, `centerbias.fit_center_bias`)
on that fold's training images only; the readout's feature statistics too.

Working directory (everything a re-run needs to skip finished folds and resume
the current one from its last checkpoint)::

    setup.json            configs, seed, fold assignment (a re-run must match it)
    batched/seeds<S>_folds_<k>_..._<m>/checkpoints
                          orbax steps of a vectorised run of those folds (`train_folds_at_once`)
    fold_<k>/checkpoints[_<i>]  orbax steps of instance i when trained fold by fold
    fold_<k>/model.npz    the fold's model (`model.save_model`, a mixture of its instances)
    fold_<k>/heldout.npz  log densities on the density grid of its held-out images
    fold_<k>/history.json losses per epoch, best epoch, wall times
    fold_<k>/done.json    SHA-256 of the fold's outputs, written last: a fold is finished
                          only when it exists and every output still matches it
    mixture.npz           the ten heads as one mixture model (`model.mixture`)

Held-out results are scored by `report.crossval_report` against the crossvalidated
(leave-one-image-out) centre bias and the gold standard (`baselines.fit_baselines`).
`ensemble_crossvalidation` combines finished runs (e.g. one per backbone) into a
working directory of averaged held-out predictions, scored the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import batched_training, checkpoints, input_pipeline, training
from deepgaze_jax.centerbias import fit_center_bias
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.densities import log_mean_density
from deepgaze_jax.model import (
    DeepGazeParams, ModelConfig, SaliencyHead, centerbias_on_grid, load_model, mixture, save_model,
)

logger = logging.getLogger(__name__)

CENTERBIAS_TEMPLATE_SIZE = (256, 256)


def fold_assignment(num_images: int, num_folds: int = 10, seed: int = 0) -> np.ndarray:
    """(num_images,) int fold of each image: a seeded permutation cut into near-equal parts."""
    if not 2 <= num_folds <= num_images:
        raise ValueError(f"need 2 <= folds <= {num_images} images, got {num_folds}")
    folds = np.empty(num_images, np.int64)
    folds[np.random.default_rng(seed).permutation(num_images)] = np.arange(num_images) % num_folds
    return folds


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


@functools.partial(jax.jit, static_argnums=0)
def _head_log_density(config: ModelConfig, variables, grid, log_cb):
    return SaliencyHead(config).apply(variables, grid.astype(jnp.float32)[None], log_cb[None])[0]


def predict_grids(config: ModelConfig, variables, grids: Sequence[np.ndarray], log_cbs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """(H, W) float32 log density on the density grid for each (grid, centre bias) pair (compiled once per shape)."""
    return [np.asarray(_head_log_density(config, variables, jnp.asarray(g), jnp.asarray(c))) for g, c in zip(grids, log_cbs)]


def initial_head(init: DeepGazeParams | None) -> tuple[dict | None, dict | None]:
    """(params, stats) of the first component of a pretrained model, or (None, None)."""
    if init is None:
        return None, None
    first = jax.tree_util.tree_map(lambda x: x[0], init.head)
    return first["params"], first["stats"]


@dataclasses.dataclass(frozen=True)
class FoldSetup:
    """What fold ``fold``'s models start from.

    Attributes:
      train_idx, val_idx: its training and held-out images.
      centerbias: the centre bias fitted on its training images; template: its (256, 256) log density.
      stats: the readout's feature statistics (of its training grids, or of the pretrained model).
      init_params: pretrained readout params, or None for a random init.
      setup_s: seconds spent on this setup.
    """

    fold: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    centerbias: object
    template: np.ndarray
    stats: dict
    init_params: dict | None
    setup_s: float


def fold_setup(fold: int, folds: np.ndarray, data: FoldData, feature_sums, init: DeepGazeParams | None) -> FoldSetup:
    """Fits fold ``fold``'s centre bias and feature statistics on its training images only."""
    started = time.time()
    train_idx, val_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    centerbias = fit_center_bias(data.fixations.subset_images(train_idx))
    init_params, init_stats = initial_head(init)
    stats = init_stats if init_stats is not None else input_pipeline.stats_from_sums(feature_sums, train_idx)
    return FoldSetup(fold, train_idx, val_idx, centerbias, centerbias.template(CENTERBIAS_TEMPLATE_SIZE), stats,
                     init_params, time.time() - started)


def instance_key(seed: int, fold: int, instance: int) -> jax.Array:
    """PRNG key of readout instance ``instance`` of fold ``fold``: ``PRNGKey(seed + fold)``, folded with the
    instance number for instances after the first."""
    key = jax.random.PRNGKey(seed + fold)
    return key if instance == 0 else jax.random.fold_in(key, instance)


def initial_state(config: ModelConfig, train_config: training.TrainConfig, setup: FoldSetup, instance: int):
    return training.create_train_state(config, train_config, setup.stats, params=setup.init_params,
                                       key=instance_key(train_config.seed, setup.fold, instance))


def write_fold(
    fold_dir: Path, setup: FoldSetup, data: FoldData, config: ModelConfig, states: Sequence[training.TrainState],
    timing: dict,
) -> None:
    """Writes a finished fold: its model (the instances as a mixture), held-out predictions (averaged in
    probability over the instances), history, and last ``done.json``."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    all_cbs = centerbias_grids(setup.template, data.fixations, config.cell)
    log_cbs, grids = [all_cbs[i] for i in setup.val_idx], [data.grids[i] for i in setup.val_idx]
    variables = [state.head_variables(best=True) for state in states]
    per_instance = [predict_grids(config, v, grids, log_cbs) for v in variables]
    heldout = [log_mean_density(list(maps), dtype=np.float32) for maps in zip(*per_instance)]
    head = jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *variables)
    save_model(DeepGazeParams(backbone_weights={}, head=head, centerbias=jnp.asarray(setup.template), config=config),
               fold_dir / "model.npz")
    histories = [training.history(state) for state in states]
    history = {**histories[0], "epochs": int(states[0].epoch), "setup_s": setup.setup_s, **timing,
               "centerbias": {"bandwidth_rel": setup.centerbias.bandwidth, "uniform_weight": setup.centerbias.uniform_weight}}
    if len(states) > 1:
        history["instances"] = [{**h, "epochs": int(s.epoch)} for h, s in zip(histories, states)]
    (fold_dir / "history.json").write_text(json.dumps(history, indent=1))
    write_heldout(fold_dir, setup.val_idx, heldout)
    mark_done(fold_dir, FOLD_OUTPUTS)


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
    train_groups = input_pipeline.make_groups(data.grids, log_cbs, data.fixations, setup.train_idx, config.cell, dtype=dtype)
    val_groups = input_pipeline.make_groups(data.grids, log_cbs, data.fixations, setup.val_idx, config.cell, dtype=dtype)
    fold_config = dataclasses.replace(train_config, seed=train_config.seed + fold)
    steps = training.make_steps(config, fold_config)
    states, started, epochs_run = [], time.time(), 0
    for instance in range(seeds):
        state = initial_state(config, train_config, setup, instance)
        manager = checkpoints.checkpoint_manager(fold_dir / ("checkpoints" if instance == 0 else f"checkpoints_{instance}"))
        restored = checkpoints.restore_checkpoint(manager, state)
        if restored is not None:
            log(f"fold {fold}{f' instance {instance}' if instance else ''}: resuming from epoch {int(restored.epoch)}")
            state = restored
        before = int(state.epoch)
        state = training.fit(state, train_groups, val_groups, steps, fold_config, manager, log=log, desc=f"fold {fold}")
        manager.close()
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
        [s.train_idx for s, _ in members],
        [s.val_idx for s, _ in members], config.cell, dtype=dtype,
    )
    states = batched_training.stack_states([initial_state(config, train_config, s, i) for s, i in members])
    manager = checkpoints.checkpoint_manager(run_dir / "checkpoints")
    restored = checkpoints.restore_checkpoint(manager, states)
    if restored is not None:
        log(f"{run_dir.name}: resuming from epoch {int(np.max(np.asarray(restored.epoch)))}")
        states = restored
    log(f"training {len(members)} readouts at once: {', '.join(names)}")
    started, before = time.time(), int(np.max(np.asarray(states.epoch)))
    steps = batched_training.make_batched_steps(config, train_config)
    states = batched_training.fit_many(states, groups, models, steps, train_config, manager, log=log, names=names)
    manager.close()
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


FOLD_OUTPUTS = ("model.npz", "history.json", "heldout.npz")
DONE_NAME = "done.json"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mark_done(fold_dir: Path, names: Sequence[str]) -> None:
    """Writes ``fold_dir/done.json`` (atomically, last): the SHA-256 of each output in ``names``."""
    digests = {name: file_sha256(fold_dir / name) for name in names}
    tmp = fold_dir / f"{DONE_NAME}.tmp"
    tmp.write_text(json.dumps({"sha256": digests}, indent=1))
    os.replace(tmp, fold_dir / DONE_NAME)


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


def write_heldout(fold_dir: Path, index: Sequence[int], log_densities: Sequence[np.ndarray]) -> None:
    """Writes ``fold_dir/heldout.npz`` atomically: image indices and their log densities on the density grid."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    tmp = fold_dir / "heldout.tmp.npz"
    np.savez(tmp, index=np.asarray(index), **{f"image_{int(i)}": h for i, h in zip(index, log_densities)})
    os.replace(tmp, fold_dir / "heldout.npz")


def fold_heldout(workdir: Path, fold: int) -> dict[int, np.ndarray]:
    """{image index: (H, W) held-out log density on the density grid} of one finished fold."""
    with np.load(workdir / f"fold_{fold}" / "heldout.npz") as f:
        return {int(i): f[f"image_{int(i)}"] for i in f["index"]}


def load_heldout(workdir: Path, num_folds: int) -> dict[int, np.ndarray]:
    """`fold_heldout` over all folds."""
    return {i: grid for fold in range(num_folds) for i, grid in fold_heldout(workdir, fold).items()}


def read_setup(workdir: Path) -> dict:
    """``workdir/setup.json``, with an error that says what to do when it is damaged."""
    path = workdir / "setup.json"
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path} is damaged ({exc}); restore it, or delete {workdir} (or use another --workdir) to start over"
        ) from exc


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
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("setup.json.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_crossvalidation(
    data: FoldData,
    config: ModelConfig,
    train_config: training.TrainConfig,
    workdir: str | os.PathLike,
    num_folds: int = 10,
    seed: int = 0,
    init: DeepGazeParams | None = None,
    log: Callable[[str], None] = logger.info,
    seeds: int = 1,
    at_once: bool = False,
    dtype: np.dtype | None = None,
) -> DeepGazeParams:
    """Trains every unfinished fold and returns the mixture of the fold models (also saved as ``mixture.npz``).

    Each fold has ``seeds`` readout instances (averaged in probability), trained one after the
    other (`train_fold`), or with ``at_once`` (L-BFGS only) all together by one vectorised
    program (`train_folds_at_once`; on a 2-core AVX2 CPU it is the slower of the two, see
    `batched_training`). ``dtype`` of the grids on device: default `batched_training.training_dtype`.
    The mixture's centre bias is fitted on all fixations (for use on other datasets).
    """
    if seeds > 1 and init is not None:
        raise ValueError("instances started from the same pretrained readout are identical: use seeds=1 with init")
    workdir = Path(workdir)
    folds = fold_assignment(data.fixations.num_images, num_folds, seed)
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
            "init": None if init is None else "pretrained",
        },
    )
    dtype = batched_training.training_dtype() if dtype is None else np.dtype(dtype)
    if train_config.optimizer != "lbfgs" and at_once:
        raise ValueError("training all folds at once needs L-BFGS; drop at_once (--at-once) for Adam")
    pending = []
    for fold in range(num_folds):
        problem = fold_problem(workdir, fold)
        if problem is None:
            log(f"fold {fold}: done, skipping")
        else:
            if problem != "not finished":
                log(f"fold {fold}: {problem}; training it again")
            pending.append(fold)
    if pending:
        log(f"training dtype {dtype.name} on {jax.devices()[0].device_kind} "
            f"({'bfloat16: GPU or AMX-BF16 CPU' if dtype != np.float32 else 'float32: no GPU, no AMX-BF16'})")
        sums = input_pipeline.feature_sums(data.grids) if init is None else None
        if not at_once:
            for fold in pending:
                setup = fold_setup(fold, folds, data, sums, init)
                log(f"fold {fold}: training on {len(setup.train_idx)} images, stopping on {len(setup.val_idx)}")
                train_fold(setup, data, config, train_config, workdir, seeds, dtype, log)
        else:
            run_dir, run_folds = batched_run_dir(workdir, pending, seeds)
            setups = [fold_setup(fold, folds, data, sums, init) for fold in run_folds]
            train_folds_at_once(setups, data, config, train_config, workdir, run_dir, pending, seeds, dtype, log)
    models = [load_model(workdir / f"fold_{k}" / "model.npz", backbone_weights={}) for k in range(num_folds)]
    template = fit_center_bias(data.fixations).template(CENTERBIAS_TEMPLATE_SIZE)
    combined = mixture(models).replace(centerbias=jnp.asarray(template))
    save_model(combined, workdir / "mixture.npz")
    return combined


ENSEMBLE_SHARED = ("num_folds", "seed", "num_images", "num_fixations")


def ensemble_crossvalidation(member_workdirs: Sequence[str | os.PathLike], workdir: str | os.PathLike) -> dict:
    """Averages, in probability, the held-out predictions of finished crossvalidation runs.

    The runs (e.g. one per backbone) must share folds, seed and data, and the density grid
    (``cell``), so that image i was held out by the same fold in each. Writes ``workdir``
    as a crossvalidation working directory (``setup.json``, ``fold_<k>/heldout.npz``) that
    `report.crossval_report` scores like a single run, and returns its setup.
    """
    members = [Path(w) for w in member_workdirs]
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two crossvalidation runs")
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
    num_folds = first["num_folds"]
    unfinished = [f"{m}/fold_{k}" for m in members for k in range(num_folds) if not fold_done(m, k)]
    if unfinished:
        raise ValueError(f"unfinished folds {unfinished[:3]}{'...' if len(unfinished) > 3 else ''}: finish those runs first")
    setup = {**{k: first[k] for k in ENSEMBLE_SHARED}, "ensemble_of": [str(m) for m in members],
             "model_configs": [s["model_config"] for s in setups]}
    workdir = Path(workdir)
    check_setup(workdir, setup)
    for fold in range(num_folds):
        heldouts = [fold_heldout(m, fold) for m in members]
        index = sorted(heldouts[0])
        if any(sorted(h) != index for h in heldouts[1:]):
            raise ValueError(f"fold {fold} holds out different images in {members}")
        write_heldout(workdir / f"fold_{fold}", index,
                      [log_mean_density([h[i] for h in heldouts], dtype=np.float32) for i in index])
        mark_done(workdir / f"fold_{fold}", ("heldout.npz",))
    return setup
