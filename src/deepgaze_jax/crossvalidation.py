"""The paper's 10-fold crossvalidation over images (section 2.4), resumable.

The images are split into ``folds`` parts with a fixed seed. For fold k the
readout is trained on the other parts; the stopping rule (`training.should_stop`)
is evaluated on part k, and part k is then predicted by the best parameters, so
every image is predicted by a model that never saw it. The centre bias used by
each fold's model is fitted (maximum likelihood, `centerbias.fit_center_bias`)
on that fold's training images only; the readout's feature statistics too.

Working directory (everything a re-run needs to skip finished folds and resume
the current one from its last checkpoint)::

    setup.json            configs, seed, fold assignment (a re-run must match it)
    fold_<k>/checkpoints  orbax steps (`training.checkpoint_manager`)
    fold_<k>/model.npz    the fold's best head as a one-component model (`model.save_head`)
    fold_<k>/heldout.npz  log densities on the density grid of its held-out images
    fold_<k>/history.json losses per epoch, best epoch, wall times
    mixture.npz           the ten heads as one mixture model (`model.mixture`)

Held-out results are scored by `report.crossval_report` against the crossvalidated
(leave-one-image-out) centre bias and the gold standard (`baselines.fit_baselines`).
`ensemble_crossvalidation` combines finished runs (e.g. one per backbone) into a
working directory of averaged held-out predictions, scored the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import training
from deepgaze_jax.centerbias import fit_center_bias
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.densities import log_mean_density
from deepgaze_jax.model import (
    DeepGazeParams, ModelConfig, SaliencyHead, centerbias_on_grid, load_model, mixture, save_head, save_model,
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


def predict_grids(config: ModelConfig, variables, grids: Sequence[np.ndarray], log_cbs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """(H, W) float32 log density on the density grid for each (grid, centre bias) pair."""
    apply = jax.jit(lambda g, c: SaliencyHead(config).apply(variables, g.astype(jnp.float32)[None], c[None])[0])
    return [np.asarray(apply(jnp.asarray(g), jnp.asarray(c))) for g, c in zip(grids, log_cbs)]


def initial_head(init: DeepGazeParams | None) -> tuple[dict | None, dict | None]:
    """(params, stats) of the first component of a pretrained model, or (None, None)."""
    if init is None:
        return None, None
    first = jax.tree_util.tree_map(lambda x: x[0], init.head)
    return first["params"], first["stats"]


def train_fold(
    fold: int,
    folds: np.ndarray,
    data: FoldData,
    config: ModelConfig,
    train_config: training.TrainConfig,
    workdir: Path,
    init: DeepGazeParams | None = None,
    log: Callable[[str], None] = logger.info,
) -> None:
    """Trains fold ``fold`` (resuming from its checkpoints) and writes its model, held-out predictions, history.

    With ``init`` (a pretrained model) the readout starts from its first component,
    keeping that model's feature statistics; otherwise from a random init seeded by
    ``train_config.seed + fold`` with statistics of the fold's training features.
    """
    fold_dir = workdir / f"fold_{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    train_idx, val_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    started = time.time()

    centerbias = fit_center_bias(data.fixations.subset_images(train_idx))
    template = centerbias.template(CENTERBIAS_TEMPLATE_SIZE)
    log_cbs = centerbias_grids(template, data.fixations, config.cell)
    init_params, init_stats = initial_head(init)
    stats = init_stats if init_stats is not None else training.feature_stats(data.grids, train_idx)
    train_groups = training.make_groups(data.grids, log_cbs, data.fixations, train_idx, config.cell)
    val_groups = training.make_groups(data.grids, log_cbs, data.fixations, val_idx, config.cell)

    fold_config = dataclasses.replace(train_config, seed=train_config.seed + fold)
    steps = training.make_steps(config, fold_config)
    state = training.create_train_state(config, fold_config, stats, params=init_params)
    manager = training.checkpoint_manager(fold_dir / "checkpoints")
    restored = training.restore_checkpoint(manager, state)
    if restored is not None:
        log(f"fold {fold}: resuming from epoch {int(restored.epoch)}")
        state = restored
    setup_s = time.time() - started
    started = time.time()
    epochs_before = int(state.epoch)
    state = training.fit(state, train_groups, val_groups, steps, fold_config, manager, log=log, desc=f"fold {fold}")
    manager.close()
    train_s = time.time() - started

    variables = state.head_variables(best=True)
    heldout = predict_grids(config, variables, [data.grids[i] for i in val_idx], [log_cbs[i] for i in val_idx])
    save_head(config, variables, template, fold_dir / "model.npz")
    history = json.loads(training.history_json(state))
    epochs_run = int(state.epoch) - epochs_before
    history.update(
        epochs=int(state.epoch),
        setup_s=setup_s,
        train_s=train_s,
        s_per_epoch=train_s / max(epochs_run, 1),
        centerbias={"bandwidth_rel": centerbias.bandwidth, "uniform_weight": centerbias.uniform_weight},
    )
    (fold_dir / "history.json").write_text(json.dumps(history, indent=1))
    write_heldout(fold_dir, val_idx, heldout)  # written last: its presence marks the fold as done



def fold_done(workdir: Path, fold: int) -> bool:
    return (workdir / f"fold_{fold}" / "heldout.npz").is_file()


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


def check_setup(workdir: Path, setup: dict) -> None:
    """Writes ``setup.json``, or checks that an existing one matches (resuming a different run is an error)."""
    path = workdir / "setup.json"
    text = json.dumps(setup, indent=1, sort_keys=True)
    if path.is_file():
        if json.loads(path.read_text()) != json.loads(text):
            raise ValueError(
                f"{workdir} holds a different crossvalidation run ({path}); use another --workdir or delete it"
            )
        return
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def run_crossvalidation(
    data: FoldData,
    config: ModelConfig,
    train_config: training.TrainConfig,
    workdir: str | os.PathLike,
    num_folds: int = 10,
    seed: int = 0,
    init: DeepGazeParams | None = None,
    log: Callable[[str], None] = logger.info,
) -> DeepGazeParams:
    """Trains every unfinished fold and returns the mixture of the fold models (also saved as ``mixture.npz``).

    The mixture's centre bias is fitted on all fixations (for use on other datasets).
    """
    workdir = Path(workdir)
    folds = fold_assignment(data.fixations.num_images, num_folds, seed)
    check_setup(
        workdir,
        {
            "model_config": json.loads(config.to_json()),
            "train_config": dataclasses.asdict(train_config),
            "num_folds": num_folds,
            "seed": seed,
            "num_images": data.fixations.num_images,
            "num_fixations": len(data.fixations),
            "init": None if init is None else "pretrained",
        },
    )
    for fold in range(num_folds):
        if fold_done(workdir, fold):
            log(f"fold {fold}: done, skipping")
            continue
        log(f"fold {fold}: training on {int((folds != fold).sum())} images, stopping on {int((folds == fold).sum())}")
        train_fold(fold, folds, data, config, train_config, workdir, init=init, log=log)
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
        setups.append(json.loads((member / "setup.json").read_text()))
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
    return setup
