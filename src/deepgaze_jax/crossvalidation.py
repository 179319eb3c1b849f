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
    fold_<k>/model.npz    the fold's model (`model.save_model`, mixture of 1)
    fold_<k>/heldout.npz  log densities on the density grid of its held-out images
    fold_<k>/history.json losses per epoch, best epoch, wall times
    mixture.npz           the ten heads as one mixture model (`model.mixture`)

Held-out results are scored with `metrics.evaluate_log_densities` against the
crossvalidated (leave-one-image-out) centre bias and the gold standard.
`ensemble_crossvalidation` combines finished runs (e.g. one per backbone) into a
working directory of averaged held-out predictions, scored the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import training
from deepgaze_jax.centerbias import fit_center_bias, leave_one_image_out, leave_one_image_out_maps
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.finalizer import expand_to_pixels
from deepgaze_jax.goldstandard import fit_gold_standard, gold_standard_loglik
from deepgaze_jax.metrics import evaluate_log_densities, log_mean_density
from deepgaze_jax.plotting import plot_ig_scatter, plot_samples
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
    head = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], variables)
    save_model(DeepGazeParams(backbone_weights={}, head=head, centerbias=jnp.asarray(template), config=config), fold_dir / "model.npz")
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
    `crossval_report` scores like a single run, and returns its setup.
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


# ----------------------------------------------------------------------------- report


def subset_scores(result: dict, fixations: Fixations, images: np.ndarray) -> dict:
    """Fixation-weighted means of the per-image metrics of `evaluate_log_densities` over ``images``."""
    counts = fixations.counts_per_image()[result["per_image_index"]]
    keep = np.isin(result["per_image_index"], images)
    w = counts[keep] / counts[keep].sum()

    def mean(key):
        return float(np.sum(result[f"per_image_{key}"][keep] * w))

    scores = {key: mean(key) for key in ("ll_bits", "baseline_ll_bits", "gold_ll_bits", "auc", "sauc", "nss")}
    scores["ig_bits"] = scores["ll_bits"] - scores["baseline_ll_bits"]
    gold_ig = scores["gold_ll_bits"] - scores["baseline_ll_bits"]
    scores["gold_ig_bits"] = gold_ig
    scores["ig_explained_pct"] = 100.0 * scores["ig_bits"] / gold_ig if gold_ig > 0 else math.nan
    scores["num_images"] = int(keep.sum())
    scores["num_fixations"] = int(counts[keep].sum())
    return scores


def crossval_report(
    workdir: str | os.PathLike,
    fixations: Fixations,
    original_sizes: np.ndarray,
    cell: int,
    num_folds: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Scores of the held-out predictions: per fold, overall, and on the paper's 463 1024x768 images.

    ``fixations`` are in working space; ``original_sizes`` (I, 2) the images' original
    (height, width) (the paper's subset is the images of original size 768 x 1024).
    LL and IG in bits per fixation over uniform / over the leave-one-image-out centre
    bias, IG explained in % of the gold standard's IG, AUC and shuffled AUC.
    """
    workdir = Path(workdir)
    heldout = load_heldout(workdir, num_folds)
    folds = fold_assignment(fixations.num_images, num_folds, seed)
    centerbias = fit_center_bias(fixations)
    cb_loglik = leave_one_image_out(fixations, centerbias.bandwidth, centerbias.uniform_weight)
    gold = fit_gold_standard(fixations, cb_loglik)
    result = evaluate_log_densities(
        lambda i: np.asarray(expand_to_pixels(heldout[i], cell)),
        fixations,
        baseline_fn=leave_one_image_out_maps(fixations, centerbias.bandwidth, centerbias.uniform_weight),
        gold_loglik=gold_standard_loglik(fixations, cb_loglik, gold),
        progress=progress,
        desc="held-out",
    )
    paper = np.flatnonzero(np.all(np.asarray(original_sizes) == (768, 1024), axis=1))
    histories = [_history(workdir, k) for k in range(num_folds)]
    return {
        "overall": subset_scores(result, fixations, np.arange(fixations.num_images)),
        "paper_subset_1024x768": subset_scores(result, fixations, paper),
        "folds": [
            {**subset_scores(result, fixations, np.flatnonzero(folds == k)),
             **{key: histories[k][key] for key in HISTORY_KEYS if key in histories[k]}}
            for k in range(num_folds)
        ],
        "judd_auc": result["auc_judd"],
        "per_image": {
            "index": np.asarray(result["per_image_index"]).tolist(),
            "ig_bits": (result["per_image_ll_bits"] - result["per_image_baseline_ll_bits"]).tolist(),
            "gold_ig_bits": (result["per_image_gold_ll_bits"] - result["per_image_baseline_ll_bits"]).tolist(),
        },
        "centerbias_fit": {"bandwidth_rel": centerbias.bandwidth, "uniform_weight": centerbias.uniform_weight},
        "goldstandard_fit": dataclasses.asdict(gold),
    }


HISTORY_KEYS = ("epochs", "best_epoch", "s_per_epoch", "train_s")


def _history(workdir: Path, fold: int) -> dict:
    """The fold's training history, or {} for a fold that was not trained here (an ensemble)."""
    path = workdir / f"fold_{fold}" / "history.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_figures(
    workdir: str | os.PathLike, report: dict, load_image, fixations: Fixations, cell: int, num_examples: int = 3
) -> list[dict]:
    """The paper's pictures of the held-out predictions, as PNGs in ``workdir``.

    Figure 4: per-image IG of the model against the gold standard's (``ig_scatter.png``);
    figures 5/6: for the images with the highest, median and lowest IG, equal-mass
    contours and model samples beside the human fixations (``example_<i>.png``).
    ``load_image(i)`` returns image i at working size. Returns [{"file", "caption"}].
    """
    workdir = Path(workdir)
    per_image = report["per_image"]
    index, ig = np.asarray(per_image["index"]), np.asarray(per_image["ig_bits"])
    plot_ig_scatter(ig, np.asarray(per_image["gold_ig_bits"]), workdir / "ig_scatter.png")
    figures = [{"file": "ig_scatter.png", "caption": "information gain per image, model vs gold standard (bits/fixation)"}]
    heldout = load_heldout(workdir, len(report["folds"]))
    order = np.argsort(ig)[::-1]
    picks = [order[0], order[len(order) // 2], order[-1]][:num_examples]
    for rank, name in zip(picks, ("highest", "median", "lowest")):
        i = int(index[rank])
        on_image = fixations.n == i
        path = plot_samples(
            load_image(i), np.asarray(expand_to_pixels(heldout[i], cell)),
            (fixations.x[on_image], fixations.y[on_image]), jax.random.PRNGKey(i), workdir / f"example_{i}.png",
        )
        figures.append({"file": path.name, "caption": f"image {i}, {name} IG ({ig[rank]:.2f} bits/fixation)"})
    return figures


def report_markdown(report: dict, title: str) -> str:
    """The report as Markdown tables (bits per fixation; IG explained in %)."""
    cols = ("num_images", "ll_bits", "baseline_ll_bits", "gold_ll_bits", "ig_bits", "ig_explained_pct", "auc", "sauc")
    head = "| | images | LL | LL centre bias | LL gold | IG | IG explained % | AUC | sAUC |"
    lines = [f"# {title}", "", "LL: bits/fixation over uniform; IG: over the leave-one-image-out centre bias.", "",
             head, "|" + "---|" * (len(cols) + 1)]

    def row(name, s):
        cells = [str(s[c]) if c == "num_images" else f"{s[c]:.3f}" if c != "ig_explained_pct" else f"{s[c]:.1f}" for c in cols]
        return f"| {name} | " + " | ".join(cells) + " |"

    lines.append(row("**all images**", report["overall"]))
    lines.append(row("paper subset (1024x768)", report["paper_subset_1024x768"]))
    for k, s in enumerate(report["folds"]):
        lines.append(row(f"fold {k}", s))
    if all("epochs" in s for s in report["folds"]):
        lines += ["", "| fold | epochs | best epoch | s/epoch | train s |", "|---|---|---|---|---|"]
        for k, s in enumerate(report["folds"]):
            lines.append(f"| {k} | {s['epochs']} | {s['best_epoch']} | {s['s_per_epoch']:.2f} | {s['train_s']:.0f} |")
    for figure in report.get("figures", []):
        lines += ["", f"![{figure['caption']}]({figure['file']})"]
    return "\n".join(lines) + "\n"
