"""Crossvalidation reports: the held-out predictions scored, tabulated and drawn.

`crossval_report` scores a crossvalidation working directory (`crossvalidation`) per
fold, overall and on the paper's 1024x768 subset against the baselines
(`baselines.fit_baselines`); `report_markdown` turns it into tables and `write_figures`
draws the paper's figures 4-6 from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from deepgaze_jax.baselines import fit_baselines
from deepgaze_jax.crossvalidation import fold_assignment, load_heldout, read_setup
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.finalizer import expand_to_pixels
from deepgaze_jax.metrics import SAUC_NO_CENTERBIAS, evaluate_log_densities, sauc_no_centerbias, score_workers
from deepgaze_jax.plotting import plot_ig_scatter, plot_samples


def subset_scores(result: dict, fixations: Fixations, images: np.ndarray) -> dict:
    """Fixation-weighted means of the per-image metrics of `evaluate_log_densities` over ``images``."""
    counts = fixations.counts_per_image()[result["per_image_index"]]
    keep = np.isin(result["per_image_index"], images)
    w = counts[keep] / counts[keep].sum()

    def mean(key):
        return float(np.sum(result[f"per_image_{key}"][keep] * w))

    keys = ("ll_bits", "baseline_ll_bits", "gold_ll_bits", "auc", "sauc", "nss", SAUC_NO_CENTERBIAS)
    scores = {key: mean(key) for key in keys if f"per_image_{key}" in result}
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
    heldout_no_centerbias: Mapping[int, np.ndarray] | None = None,
    fit_cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Scores of the held-out predictions: per fold, overall, and on the paper's 463 1024x768 images (if any).

    ``fixations`` are in working space; ``original_sizes`` (I, 2) the images' original
    (height, width) (the paper's subset is the images of original size 768 x 1024).
    LL and IG in bits per fixation over uniform / over the leave-one-image-out centre
    bias, IG explained in % of the gold standard's IG, AUC and shuffled AUC (of the
    density with the fold's centre bias). ``heldout_no_centerbias`` (image index -> held-out
    log density on the density grid computed with a uniform prior) adds the paper's
    benchmark-style ``sauc_no_centerbias``; without it that score is left out.
    ``stopping`` is the run's stopping choice (`crossvalidation.resolve_stopping`). ``fit_cache_dir`` keeps
    the baselines' fits (`fit_cache`).
    """
    workdir = Path(workdir)
    heldout = load_heldout(workdir, num_folds)
    folds = fold_assignment(fixations.num_images, num_folds, seed)
    baselines = fit_baselines(fixations, cache_dir=fit_cache_dir)
    result = evaluate_log_densities(
        lambda i: np.asarray(expand_to_pixels(heldout[i], cell)),
        fixations,
        baseline_fn=baselines.centerbias_maps,
        gold_loglik=baselines.gold_loglik,
        progress=progress,
        desc="held-out",
        workers=score_workers(),
    )
    if heldout_no_centerbias is not None:
        result.update(_sauc_no_centerbias(heldout_no_centerbias, fixations, cell, progress))
    centerbias = baselines.centerbias
    paper = np.flatnonzero(np.all(np.asarray(original_sizes) == (768, 1024), axis=1))
    histories = [_history(workdir, k) for k in range(num_folds)]
    return {
        "overall": subset_scores(result, fixations, np.arange(fixations.num_images)),
        **({"paper_subset_1024x768": subset_scores(result, fixations, paper)} if len(paper) else {}),
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
        "goldstandard_fit": dataclasses.asdict(baselines.gold),
        "stopping": read_setup(workdir)["stopping"],
    }


def _sauc_no_centerbias(grids: Mapping[int, np.ndarray], fixations: Fixations, cell: int, progress: bool) -> dict:
    """`metrics.sauc_no_centerbias` of held-out density grids without centre bias (one per image with fixations)."""
    missing = [int(i) for i in np.flatnonzero(fixations.counts_per_image() > 0) if int(i) not in grids]
    if missing:
        raise ValueError(
            f"heldout_no_centerbias lacks {len(missing)} image(s) with fixations, e.g. {missing[:5]}; "
            "give a held-out density without centre bias for every image"
        )
    return sauc_no_centerbias(lambda i: np.asarray(expand_to_pixels(grids[i], cell)), fixations, progress)


FOLD_COLUMNS = {"epochs": ("epochs", "{}"), "best_epoch": ("best epoch", "{}"), "s_per_epoch": ("s/epoch", "{:.2f}"),
                "train_s": ("train s", "{:.0f}"), "stopping_part": ("stopping part", "{}"),
                "stopping_nll_bits": ("stopping-set NLL (bits/fix)", "{:.3f}")}
"""A fold's training record (its history.json) -> (column head, format) in the report's fold table."""
HISTORY_KEYS = tuple(FOLD_COLUMNS)
STOPPING_NOTES = {
    "inner": "Each fold k stopped on part (k + 1) mod folds, one of its training parts, and trained on the "
             "others; the scored part k took no part in training, stopping or its centre bias.",
    "heldout": "Each fold k stopped on its scored part k itself (the old protocol): these held-out figures are "
               "slightly optimistic.",
}


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
    if SAUC_NO_CENTERBIAS in report["overall"]:
        cols, head = cols + (SAUC_NO_CENTERBIAS,), head + " sAUC without centre bias |"
    lines = [f"# {title}", "", "LL: bits/fixation over uniform; IG: over the leave-one-image-out centre bias; "
             "sAUC of the density with the centre bias (without it: the paper's Table 1 convention).", "",
             STOPPING_NOTES[report["stopping"]], "", head, "|" + "---|" * (len(cols) + 1)]

    def row(name, s):
        cells = [str(s[c]) if c == "num_images" else f"{s[c]:.3f}" if c != "ig_explained_pct" else f"{s[c]:.1f}" for c in cols]
        return f"| {name} | " + " | ".join(cells) + " |"

    lines.append(row("**all images**", report["overall"]))
    if "paper_subset_1024x768" in report:  # datasets other than MIT1003 may have no such images
        lines.append(row("paper subset (1024x768)", report["paper_subset_1024x768"]))
    for k, s in enumerate(report["folds"]):
        lines.append(row(f"fold {k}", s))
    lines += fold_training_table(report["folds"])
    for figure in report.get("figures", []):
        lines += ["", f"![{figure['caption']}]({figure['file']})"]
    return "\n".join(lines) + "\n"


def fold_training_table(folds: list[dict]) -> list[str]:
    """Markdown lines of the folds' training: each record of `FOLD_COLUMNS` that every fold has (epochs, best
    epoch, timings, the stopping part and the fold model's NLL on it, bits/fixation); no lines if no record is
    in every fold."""
    keys = [key for key in FOLD_COLUMNS if all(key in s for s in folds)]
    if not keys:
        return []
    lines = ["", "| fold | " + " | ".join(FOLD_COLUMNS[k][0] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for k, s in enumerate(folds):
        lines.append(f"| {k} | " + " | ".join(FOLD_COLUMNS[key][1].format(s[key]) for key in keys) + " |")
    return lines
