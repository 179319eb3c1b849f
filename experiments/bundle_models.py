"""Bundles finished MIT1003 crossvalidations as the package's models, and writes their model card.

    python -m experiments.bundle_models --runs-dir RUNS      # the `SOURCES` runs, under that folder
    python -m benchmarks.inference --tables bundled --costs-out costs.json
    python -m experiments.bundle_models --runs-dir RUNS --costs costs.json   # + cost, default checked
    python -m experiments.bundle_models lite0=runs/crossval_lite0_taps_osie_eye_x6 lite2=runs/crossval_lite2_taps_osie_eye_x6 \
        lite0+lite2=runs/ensemble_lite0_lite2_taps_osie_eye_x6      # only these (with --runs-dir: these as well)
    python -m experiments.bundle_models --recost --costs costs.json   # new costs for the installed card

Each ``NAME=WORKDIR`` (default: `SOURCES`, the honest inner-stopping, OSIE-pretrained IIE-taps runs of
`experiments/configs`)
is a bundled name of `model.BUNDLED_MODELS` with the workdir of a finished
`experiments.crossval_mit1003` run, whose ``mixture.npz`` (its fold models, with all their instances, averaged in
probability) is checked with `model.load_model_file` and copied, atomically, into the package's
assets; or names joined by ``+`` with the workdir of an `experiments.ensemble_mit1003` run of
the runs bundled under those names, which bundles no file but gives that ensemble's figures.

Writes ``assets/model_card.json``: per bundled name its files, backbones, source workdir, the
held-out figures of the run's ``report.json`` (all images and the paper's 1024x768 subset), the
stopping protocol and the command that made it; with ``--costs`` (the JSON of
``benchmarks.inference --tables bundled``) its ms per 1024x768 image, and then it checks
that `model.DEFAULT_MODEL` is the one `choose_default` picks (`DEFAULT_RULE`), before writing
anything. ``--recost`` takes no runs: it puts the costs of ``--costs`` into the installed card (same files
and figures, e.g. after `predict_density` got faster) and checks the default the same way. Prints the card
as the Markdown table of the README's model card.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path

from deepgaze_jax import model
from deepgaze_jax.atomic_file import write_atomic
from deepgaze_jax.report import STOPPING_NOTES
from experiments import configs

CARD_FORMAT = "deepgaze-jax-model-card-v1"
CARD_NAME = "model_card.json"
# bundled name -> the experiment config whose run it is
SOURCES = {"lite0": "lite0_taps_osie_eye_x6", "lite1": "lite1_taps_osie_eye_x6", "lite2": "lite2_taps_osie_eye_x6",
           "lite0+lite1+lite2": "ensemble_taps_osie_eye_x6"}
"""The OSIE-pretrained IIE-taps runs with six readout instances per fold: the taps `experiments.model_search`
picked for Lite0 on stopping-set NLL (training parts), carried over to Lite1 and Lite2
(`efficientnet_lite.Variant.iie_taps`) before their runs; each fold's readout started from one pretrained on OSIE
(`experiments.pretrain_osie`), chosen over the random start (`*_taps`), and three such instances per fold (three
pretrainings, `--init-seed` 0, 1, 2) over one (`*_taps_osie`), each time by the mean stopping-set NLL over the
folds and backbones under a rule fixed before the runs (docs/pretrain_osie.md); and the pretrainings on OSIE's eye
fixations (``--fixations eye``, `*_taps_osie_eye_x3`) over its mouse data by the same criterion and such a rule;
and six instances per fold (three more pretrainings, `--init-seed` 3, 4, 5, a second three-instance run `*_x3b`
pooled with the first: `*_taps_osie_eye_x6`) by the same criterion, once the ensemble of them fitted the budget
(docs/pretrain_osie.md, "costed again")."""
PREFERRED = "lite0+lite1+lite2"
BUDGET_MS = 300.0
DEFAULT_RULE = (
    f"fixed before the runs: {PREFERRED} (the three Lite backbones' inner-stopping crossvalidations, IIE taps, averaged in "
    f"probability) if predict_density costs at most {BUDGET_MS:.0f} ms per 1024x768 image on the reference CPU; "
    "else, of the bundled names within that cost, the one of the most backbones, and of those the cheapest; no "
    "held-out score enters the choice"
)
SCORES = ("ig_explained_pct", "ll_bits", "ig_bits", "auc", "sauc", "sauc_no_centerbias", "num_images", "num_fixations")
SUBSETS = {"all_images": "overall", "paper_subset_1024x768": "paper_subset_1024x768"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="*", metavar="NAME=WORKDIR",
                        help="runs to bundle (default: SOURCES); with --runs-dir, added to SOURCES")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="folder holding the SOURCES runs (default: each config's own workdir)")
    parser.add_argument("--costs", type=Path, default=None,
                        help="JSON of `benchmarks.inference --tables bundled --costs-out`: ms per 1024x768 image")
    parser.add_argument("--recost", action="store_true",
                        help="no runs: put the costs of --costs into the installed model card and check the default")
    args = parser.parse_args(argv)
    if args.recost and (args.sources or args.runs_dir or args.costs is None):
        parser.error("--recost takes --costs and no runs (neither NAME=WORKDIR nor --runs-dir)")
    try:
        pairs = sources_from_pairs(args.sources)
    except ValueError as exc:
        parser.error(str(exc))
    args.sources = {**(default_sources(args.runs_dir) if args.runs_dir or not pairs else {}), **pairs}
    return args


def sources_from_pairs(pairs: list[str]) -> dict[str, Path]:
    """``["lite0=DIR", ...]`` -> {name: workdir}; every name must be bundled names joined by ``+``."""
    sources = {}
    for pair in pairs:
        name, sep, workdir = pair.partition("=")
        if not sep or not workdir:
            raise ValueError(f"{pair!r} is not NAME=WORKDIR")
        if name == "default" or model.bundled_members(name) is None:
            raise ValueError(f"{name!r} is not a bundled name: use {', '.join(model.BUNDLED_MODELS)} or them joined by +")
        sources[name] = Path(workdir)
    return sources


def default_sources(runs_dir: Path | None) -> dict[str, Path]:
    """`SOURCES` with each config's workdir, moved into ``runs_dir`` when given."""
    workdirs = {name: configs.get(config).workdir for name, config in SOURCES.items()}
    return {name: w if runs_dir is None else runs_dir / w.name for name, w in workdirs.items()}


def read_report(workdir: Path) -> dict:
    """The ``report.json`` of a finished run, or an error that says how to finish it."""
    path = workdir / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: finish the run first (its crossval/ensemble command writes it)")
    return json.loads(path.read_text())


def heldout_figures(report: dict) -> dict:
    """The card's held-out scores (`SCORES`, those present) on all images and on the paper's 1024x768 subset."""
    return {card_key: {k: report[key][k] for k in SCORES if k in report[key]}
            for card_key, key in SUBSETS.items() if key in report}


def made_by(arguments: dict) -> str:
    """The command line that made a run, from its report's ``command`` (crossval: by config; ensemble and pool of
    instances: its runs)."""
    workdir = arguments.get("workdir")
    if "pool_of" in arguments:
        return f"python -m experiments.pool_instances {' '.join(arguments['pool_of'])} --workdir {workdir}"
    if "runs" in arguments:
        return f"python -m experiments.ensemble_mit1003 {' '.join(arguments['runs'])} --workdir {workdir}"
    if arguments.get("model_search_candidate"):  # a candidate run of experiments.model_search (inner stopping)
        return f"python -m experiments.model_search --config {arguments['model_search_candidate']}"
    if arguments.get("config"):
        inits = arguments.get("init")
        init = f" --init {' '.join([inits] if isinstance(inits, str) else inits)}" if inits else ""
        return f"python -m experiments.crossval_mit1003 --config {arguments['config']}{init} --workdir {workdir}"
    return "python -m experiments.crossval_mit1003 (arguments: see 'arguments')"


def single_entry(name: str, workdir: Path) -> dict:
    """A single bundled name's card entry; checks its run's ``mixture.npz`` with `model.load_model_file`."""
    report = read_report(workdir)
    checked = model.load_model_file(workdir / "mixture.npz")
    return {
        "members": [name], "files": [model.BUNDLED_MODELS[name]], "backbones": [checked.config.backbone],
        "components": checked.num_components, **run_entry(workdir, report),
    }


def ensemble_entry(name: str, workdir: Path, sources: dict[str, Path], singles: dict[str, dict]) -> dict:
    """A joined name's card entry, from an ensemble run whose members are the runs bundled under its names."""
    members = list(model.bundled_members(name))
    missing = [m for m in members if m not in singles]
    if missing:
        raise ValueError(f"{name}: bundle {missing} too (NAME=WORKDIR of their crossvalidations)")
    setup = json.loads((workdir / "setup.json").read_text()) if (workdir / "setup.json").is_file() else {}
    made_of = [Path(p).resolve() for p in setup.get("ensemble_of", [])]
    wanted = [sources[m].resolve() for m in members]
    if made_of != wanted:
        raise ValueError(f"{workdir} is not the ensemble of {name}'s runs: it averages {[str(p) for p in made_of]}, "
                         f"not {[str(p) for p in wanted]} (make it with experiments.ensemble_mit1003 on those runs)")
    return {
        "members": members, "files": [f for m in members for f in singles[m]["files"]],
        "backbones": [b for m in members for b in singles[m]["backbones"]], **run_entry(workdir, read_report(workdir)),
    }


def run_entry(workdir: Path, report: dict) -> dict:
    """What a card entry says of the run behind it: source, figures, stopping protocol, command."""
    arguments = report.get("command", {})
    return {
        "source": str(workdir.resolve()), "heldout": heldout_figures(report), "stopping": report["stopping"],
        "stopping_protocol": STOPPING_NOTES[report["stopping"]], "command": made_by(arguments), "arguments": arguments,
    }


def card_entries(sources: dict[str, Path]) -> dict[str, dict]:
    """Every source's card entry: single names first (the ensembles refer to them)."""
    singles = {n: single_entry(n, w) for n, w in sources.items() if n in model.BUNDLED_MODELS}
    joined = {n: ensemble_entry(n, w, sources, singles) for n, w in sources.items() if n not in singles}
    return {**singles, **joined}


def read_costs(path: Path) -> dict:
    """The JSON of ``benchmarks.inference --tables bundled --costs-out``: {"ms_per_image": {name: ms}, ...}."""
    costs = json.loads(path.read_text())
    if not isinstance(costs.get("ms_per_image"), dict):
        raise ValueError(f"{path} has no 'ms_per_image' table: write it with benchmarks.inference --costs-out")
    return costs


def add_costs(entries: dict[str, dict], costs: dict) -> None:
    """Adds each entry's cost (ms per 1024x768 image, the machine, the command) where ``costs`` has it."""
    for name, entry in entries.items():
        if name in costs["ms_per_image"]:
            entry["cost"] = {"ms_per_1024x768_image": costs["ms_per_image"][name],
                             **{k: costs[k] for k in ("machine", "command") if k in costs}}


def choose_default(entries: dict[str, dict]) -> str:
    """`DEFAULT_RULE` applied to entries with costs: `PREFERRED` within `BUDGET_MS`, else of the names that fit
    the one of the most backbones, ties to the cheapest (by cost and size only: no held-out score)."""
    cost = {n: e["cost"]["ms_per_1024x768_image"] for n, e in entries.items() if "cost" in e}
    if cost.get(PREFERRED, math.inf) <= BUDGET_MS:
        return PREFERRED
    fits = [n for n in cost if cost[n] <= BUDGET_MS]
    if not fits:
        raise ValueError(f"no bundled name costs at most {BUDGET_MS:.0f} ms per 1024x768 image: {cost}")
    return min(fits, key=lambda n: (-len(model.bundled_members(n)), cost[n]))


def check_default(entries: dict[str, dict], costs_given: bool) -> None:
    """`model.DEFAULT_MODEL` must have an entry and, with costs, be `choose_default`'s pick."""
    default = model.DEFAULT_MODEL
    if default not in entries:
        raise ValueError(f"the default {default!r} (model.DEFAULT_MODEL) gets no figures from these runs: "
                         f"give its run as {default}=WORKDIR, or set DEFAULT_MODEL to one of {list(entries)}")
    if costs_given and choose_default(entries) != default:
        raise ValueError(f"the rule picks {choose_default(entries)!r}, not model.DEFAULT_MODEL = {default!r}: set "
                         f"DEFAULT_MODEL = {choose_default(entries)!r} in src/deepgaze_jax/model.py and run this again")


def install(sources: dict[str, Path], card: dict) -> None:
    """Copies the single names' ``mixture.npz`` into the assets, checks each loads by name, writes the card.

    Every file is first copied beside its target and loaded from there; only when all of them load
    are they moved into place (`os.replace`), so a failure leaves the installed models as they were.
    """
    model.ASSETS.mkdir(parents=True, exist_ok=True)
    staged = {}
    try:
        for name in (n for n in card["models"] if n in model.BUNDLED_MODELS):
            target = model.bundled_model_path(name)
            staged[target] = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(sources[name] / "mixture.npz", staged[target])
            model.load_model_file(staged[target])
        for target, tmp in staged.items():
            os.replace(tmp, target)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    for name in card["models"]:
        model.load_model(name)
    write_atomic(model.ASSETS / CARD_NAME, json.dumps(card, indent=1) + "\n")


def markdown_table(card: dict) -> str:
    """The model card's table: one row per bundled name, the default in bold."""
    lines = [
        "| bundled name | backbones | IG explained % (all / 1024x768) | LL bits/fix | IG bits/fix | AUC | sAUC | "
        "sAUC without centre bias | ms per 1024x768 image | stopping | made by |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in card["models"].items():
        lines.append(markdown_row(name, entry, name == card["default"]))
    return "\n".join(lines)


def markdown_row(name: str, entry: dict, is_default: bool) -> str:
    overall, paper = entry["heldout"].get("all_images", {}), entry["heldout"].get("paper_subset_1024x768", {})

    def cell(scores: dict, key: str, digits: int) -> str:
        return f"{scores[key]:.{digits}f}" if key in scores else "—"

    cost = entry.get("cost", {}).get("ms_per_1024x768_image")
    cells = [
        f"**{name} (default)**" if is_default else name, " + ".join(entry["backbones"]),
        f"{cell(overall, 'ig_explained_pct', 1)} / {cell(paper, 'ig_explained_pct', 1)}",
        cell(overall, "ll_bits", 3), cell(overall, "ig_bits", 3), cell(overall, "auc", 3), cell(overall, "sauc", 3),
        cell(overall, "sauc_no_centerbias", 3), "—" if cost is None else f"{cost:.0f}", entry["stopping"],
        f"`{entry['command']}`",
    ]
    return "| " + " | ".join(cells) + " |"


def bundle(sources: dict[str, Path], costs_path: Path | None = None) -> dict:
    """Checks everything, then installs the files and the card (`install`); returns the card."""
    entries = card_entries(sources)
    if costs_path is not None:
        add_costs(entries, read_costs(costs_path))
    check_default(entries, costs_path is not None)
    card = {"format": CARD_FORMAT, "default": model.DEFAULT_MODEL, "default_rule": DEFAULT_RULE,
            "budget_ms_per_1024x768_image": BUDGET_MS, "models": entries}
    install(sources, card)
    return card


def recost(costs_path: Path) -> dict:
    """The installed card with the costs of ``costs_path`` (`add_costs`), its default checked; written atomically."""
    card = json.loads((model.ASSETS / CARD_NAME).read_text())
    add_costs(card["models"], read_costs(costs_path))
    check_default(card["models"], costs_given=True)
    card["default"] = model.DEFAULT_MODEL
    write_atomic(model.ASSETS / CARD_NAME, json.dumps(card, indent=1) + "\n")
    return card


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    try:
        card = recost(args.costs) if args.recost else bundle(args.sources, args.costs)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"bundle_models: {exc}") from exc
    print(markdown_table(card))
    print(f"\nwrote {model.ASSETS / CARD_NAME}; default: {card['default']}"
          + ("" if args.costs else " (cost not checked: pass --costs)"))
    return card


if __name__ == "__main__":
    main()
