"""A model search on MIT1003 whose choices are made on training parts only.

    python -m experiments.model_search --config lite0 --config lite2
    python -m experiments.model_search      # every single-model config in experiments/configs

Each candidate (an ``experiments/configs/<name>.py``; all must share folds and fold seed)
is crossvalidated with inner stopping (`crossvalidation.fold_split`: fold k trains on the
parts other than k and k + 1, stops on part k + 1 and is scored on part k), whatever the
config's own ``stopping``, into ``<workdir>/<name>``, resumable as `experiments.crossval_mit1003`.

The only selection criterion is the *inner stopping-set NLL* (bits/fixation) of each
fold's model: its NLL on part k + 1, one of fold k's training parts. Fold k's pick is the
candidate with the lowest stopping-set NLL in fold k (that NLL is also what the fold's
stopping epoch minimised, a bias shared by all candidates); the picks' held-out maps (part k
from fold k's pick) are scored once, as a crossvalidation of their own
(``<workdir>/selected_<names>``, `crossvalidation.select_folds`). No choice sees a scored
part. The table also lists each candidate's mean stopping-set NLL over folds (a ranking:
every part is some fold's stopping part, so one configuration chosen by that mean and
scored on all parts would not be nested) and, for information only, each candidate's own
held-out figures.

Writes ``--out`` (Markdown, default ``docs/model_search_mit1003.md``) and the same as
JSON beside it (``.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from deepgaze_jax import batched_training, crossvalidation, fit_cache
from deepgaze_jax.data import datasets, mit1003
from deepgaze_jax.data.datasets import Dataset
from deepgaze_jax.dataset_training import crossvalidate_dataset, load_init, write_report
from deepgaze_jax.atomic_file import write_atomic
from deepgaze_jax.metrics import SAUC_NO_CENTERBIAS
from experiments import configs
from experiments.configs import Experiment

log = logging.getLogger("model_search").info

SCORE_KEYS = ("ll_bits", "ig_bits", "ig_explained_pct", "auc", "sauc", SAUC_NO_CENTERBIAS)
PAPER_SUBSET = "paper_subset_1024x768"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; without ``--config``, every config that is not an ensemble or a pool of other runs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", choices=configs.NAMES, default=None,
                        help="a candidate (repeat for each); default: every single-model config")
    parser.add_argument("--data-dir", type=Path, default=None, help="MIT1003 root (default: discovered)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/model_search"), help="one run per candidate here")
    parser.add_argument("--cache-dir", type=Path, default=configs.DEFAULT_CACHE_DIR, help="feature cache directory")
    parser.add_argument("--out", type=Path, default=Path("docs/model_search_mit1003.md"), help="the table (.md; .json beside)")
    args = parser.parse_args(argv)
    args.config = args.config or [name for name in configs.NAMES if not configs.get(name).members]
    ensembles = [name for name in args.config if configs.get(name).members]
    if ensembles:
        parser.error(f"{', '.join(ensembles)}: an ensemble or pool of other runs is not a candidate; pass its members")
    if len(set(args.config)) < 2 or len(set(args.config)) != len(args.config):
        parser.error("give at least two different --config candidates, each once")
    return args


def crossvalidate_candidate(
    name: str, experiment: Experiment, dataset: Dataset, workdir: Path, cache_dir: Path, log: Callable[[str], None],
) -> dict:
    """Crossvalidates candidate ``name`` with inner stopping into ``workdir`` (resumable); returns its report.

    The folds train all at once where the optimiser allows it (`batched_training.trainable_at_once`), as
    `experiments.crossval_mit1003` does by default."""
    title = f"MIT1003 model search, candidate {name}: {experiment.model.backbone}, inner stopping"
    configs.check_init(experiment.init, name)
    init = [load_init(path, experiment.model) for path in configs.init_paths(experiment.init) or ()] or None
    _, report = crossvalidate_dataset(
        dataset, experiment.model, experiment.training, workdir, cache_dir, title, num_folds=experiment.folds,
        fold_seed=experiment.fold_seed, init=init, command={"model_search_candidate": name}, log=log, stopping="inner",
        seeds=experiment.seeds, at_once=batched_training.trainable_at_once(experiment.training),
    )
    return report


def scores(report: dict) -> dict:
    """The held-out figures of a crossvalidation report: overall and (if present) on the paper's subset."""
    parts = {"overall": report["overall"], **({PAPER_SUBSET: report[PAPER_SUBSET]} if PAPER_SUBSET in report else {})}
    return {part: {k: s[k] for k in SCORE_KEYS if k in s} for part, s in parts.items()}


def candidate_row(name: str, workdir: Path, report: dict) -> dict:
    """One candidate: its stopping-set NLL per fold and their mean (bits/fix), and its held-out figures."""
    stopping = [float(fold["stopping_nll_bits"]) for fold in report["folds"]]
    return {"name": name, "workdir": str(workdir), "stopping_nll_bits_per_fold": stopping,
            "stopping_nll_bits_mean": float(np.mean(stopping)), "heldout": scores(report)}


def check_candidates(experiments: Mapping[str, Experiment]) -> None:
    """Refuses candidates whose folds would not line up (folds, fold seed, working size, density grid)."""
    keys = {name: (e.folds, e.fold_seed, e.model.long_side, e.model.cell) for name, e in experiments.items()}
    if len(set(keys.values())) > 1:
        raise ValueError(f"candidates must share (folds, fold seed, long side, cell) to be compared fold by fold: {keys}")


def per_fold_picks(rows: list[dict]) -> list[str]:
    """Per fold, the candidate with the lowest stopping-set NLL in that fold (the first one on a tie)."""
    num_folds = len(rows[0]["stopping_nll_bits_per_fold"])
    return [min(rows, key=lambda row: row["stopping_nll_bits_per_fold"][k])["name"] for k in range(num_folds)]


def search(
    experiments: Mapping[str, Experiment], dataset: Dataset, workdir: Path, cache_dir: Path, out: Path,
    log: Callable[[str], None] = log,
) -> dict:
    """Runs the candidates, picks per fold, scores the picks; writes ``out`` (.md) and its .json; returns the table."""
    check_candidates(experiments)
    started = time.time()
    rows = [candidate_row(name, workdir / name, crossvalidate_candidate(name, e, dataset, workdir / name, cache_dir, log))
            for name, e in experiments.items()]
    picks = per_fold_picks(rows)
    selected = workdir / f"selected_{'_'.join(experiments)}"
    setup = crossvalidation.select_folds([workdir / name for name in picks], selected)
    fixations = dataset.fixations.rescaled(datasets.working_sizes(dataset.image_sizes, mode="paper"))
    report = write_report(
        selected, dataset, fixations, setup["model_configs"][0]["cell"], setup["num_folds"], setup["seed"],
        f"MIT1003 model search: per-fold picks among {', '.join(experiments)}", command={"picks": picks},
        fit_cache_dir=cache_dir / fit_cache.SUBDIR,
    )
    table = {"dataset": dataset.name, "stopping": "inner", "criterion": "stopping_nll_bits", "candidates": rows,
             "picks": picks, "selected_workdir": str(selected), "selected": scores(report), "total_s": time.time() - started}
    write_atomic(out.with_suffix(".json"), json.dumps(table, indent=1))
    write_atomic(out, table_markdown(table))
    log(f"picks per fold: {picks}; held-out IG explained of the picks {report['overall']['ig_explained_pct']:.1f}%; "
        f"table in {out}")
    return table


def score_cells(part: dict) -> str:
    """The Markdown cells of one set of held-out figures (blank where a figure is missing)."""
    def cell(key: str) -> str:
        if key not in part:
            return ""
        return f"{part[key]:.1f}" if key == "ig_explained_pct" else f"{part[key]:.3f}"

    return " | ".join(cell(key) for key in SCORE_KEYS)


def table_markdown(table: dict) -> str:
    """The search table: candidates (criterion, then held-out figures), per-fold picks, the picks' score."""
    score_head = "LL | IG | IG explained % | AUC | sAUC | sAUC without centre bias"
    names = [row["name"] for row in table["candidates"]]
    lines = [
        "# Model search on MIT1003 (inner stopping)", "",
        "Fold k trains on the parts other than k and k + 1, stops on part k + 1 and is scored on part k. "
        "The selection criterion is the fold model's NLL on its stopping part (bits/fixation, lower is better), "
        "a training part of that fold; each fold's pick is the candidate lowest there, and the held-out score of "
        "the picks is the search's result. The candidates' own held-out figures are for information only: "
        "nothing is chosen on them. LL and IG in bits/fixation (IG over the leave-one-image-out centre bias).", "",
        f"| candidate | stopping-set NLL, mean over folds (criterion) | held-out {score_head} |",
        "|---|---|" + "---|" * len(SCORE_KEYS),
    ]
    for row in table["candidates"]:
        lines.append(f"| {row['name']} | {row['stopping_nll_bits_mean']:.4f} | {score_cells(row['heldout']['overall'])} |")
    lines += ["", "| fold | " + " | ".join(f"{n} stopping-set NLL" for n in names) + " | pick |",
              "|---|" + "---|" * (len(names) + 1)]
    for k, pick in enumerate(table["picks"]):
        nll = [f"{row['stopping_nll_bits_per_fold'][k]:.4f}" for row in table["candidates"]]
        lines.append(f"| {k} | " + " | ".join(nll) + f" | {pick} |")
    lines += ["", f"**Held-out score of the per-fold picks** (`{table['selected_workdir']}`):", "",
              f"| images | {score_head} |", "|---|" + "---|" * len(SCORE_KEYS)]
    for part, label in (("overall", "all images"), (PAPER_SUBSET, "the paper's 1024x768 images")):
        if part in table["selected"]:
            lines.append(f"| {label} | {score_cells(table['selected'][part])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    configs.start_process()
    experiments = {name: configs.get(name) for name in args.config}
    try:
        return search(experiments, mit1003.mit1003(args.data_dir), args.workdir, args.cache_dir, args.out)
    except ValueError as exc:
        raise SystemExit(f"model_search: {exc}") from exc


if __name__ == "__main__":
    main()
