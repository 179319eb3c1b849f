"""OSIE statistics: eye fixations vs mouse pseudo-fixations, and how well the mouse predicts the eye.

    python -m experiments.osie_stats [--root ../shared/datasets/osie] [--out docs/osie_stats.json]

Prints markdown tables (docs/osie.md holds them):

1. counts per source (eye; mouse "amt" and "lab" as pseudo-fixations, `data.mouse_fixations`
   with its default parameters): images, observers, raw mouse samples, trajectories,
   fixations per image and per trajectory;
2. the step lengths between consecutive mouse samples (log-binned density): a slow mode
   (the mouse resting, 1-4 px) decays onto a flat plateau of fast steps (jumps of 16 to
   256 px are about equally likely per log px); the velocity threshold belongs where the
   slow mode has ended, printed as the first bin within 25% of the plateau's level;
3. the eye fixations' log-likelihood (bits per fixation over uniform) at the DeepGaze II
   working size (512x384) under the centre bias (leave one image out), under a KDE of the
   mouse pseudo-fixations *on the same image* mixed with that centre bias and a uniform
   density (bandwidth and three weights by maximum likelihood, as the gold standard's),
   and under the eye gold standard (other observers' eye fixations). The information gain
   over the centre bias is the centre-bias-free part: what the mouse data know about each
   image. Nothing here selects the pseudo-fixation parameters (they are fixed beforehand).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from deepgaze_jax.atomic_file import write_atomic
from deepgaze_jax.centerbias import fit_bandwidth, fit_center_bias, images_by_size, leave_one_image_out, uniform_log_density
from deepgaze_jax.data import osie
from deepgaze_jax.data.datasets import Dataset, paper_sizes
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.data.mouse_fixations import PseudoFixationConfig, trajectory_starts
from deepgaze_jax.goldstandard import fit_gold_standard, gold_standard_loglik
from deepgaze_jax.densities import safe_log
from deepgaze_jax.kde import blur_matrix, kernel_pairs
from deepgaze_jax.metrics import bits_over_uniform, per_image_means

STEP_EDGES_PX = np.geomspace(1.0, 1024.0, 21)  # 2 bins per octave
PLATEAU_RANGE_PX = (8.0, 256.0)  # where the fast steps' plateau is looked for
SLOW_MODE_TOLERANCE = 0.25  # the slow mode has ended where the density is within 25% of the plateau


def step_lengths(recordings: list[osie.MouseRecording]) -> np.ndarray:
    """(S,) pixel distances between consecutive samples of the same trajectory, over all recordings."""
    out = []
    for r in recordings:
        within = ~trajectory_starts(r.subject, r.order)[1:]
        out.append(np.hypot(np.diff(r.x), np.diff(r.y))[within])
    return np.concatenate(out)


def step_density(steps: np.ndarray) -> np.ndarray:
    """Density of log step length per bin of `STEP_EDGES_PX` (fraction of steps per unit of ln px)."""
    counts, _ = np.histogram(steps, STEP_EDGES_PX)
    return counts / len(steps) / np.diff(np.log(STEP_EDGES_PX))


def slow_mode_end(density: np.ndarray) -> tuple[float, float, float]:
    """(low px, high px, plateau density): the first bin from 4 px on within `SLOW_MODE_TOLERANCE` of the plateau.

    The plateau is the least populated bin inside `PLATEAU_RANGE_PX`.
    """
    low, high = STEP_EDGES_PX[:-1], STEP_EDGES_PX[1:]
    plateau = density[(low >= PLATEAU_RANGE_PX[0]) & (high <= PLATEAU_RANGE_PX[1])].min()
    k = np.flatnonzero((low >= 4.0) & (density <= (1.0 + SLOW_MODE_TOLERANCE) * plateau))[0]
    return float(low[k]), float(high[k]), float(plateau)


def count_row(name: str, dataset: Dataset, recordings: list[osie.MouseRecording] | None) -> dict:
    """Counts of one source; ``recordings`` (mouse only) add raw samples and trajectories."""
    per_image = dataset.fixations.counts_per_image()
    row = {
        "source": name,
        "images": len(dataset),
        "observers": int(len(np.unique(dataset.fixations.subject))),
        "fixations": len(dataset.fixations),
        "fixations_per_image_mean": float(per_image.mean()),
        "fixations_per_image_min": int(per_image.min()),
        "fixations_per_image_max": int(per_image.max()),
    }
    if recordings is None:
        pairs = len(np.unique(dataset.fixations.n.astype(np.int64) * 10_000 + dataset.fixations.subject))
        row.update(samples=None, trajectories=pairs)
    else:
        row.update(
            samples=int(sum(len(r.x) for r in recordings)),
            trajectories=int(sum(trajectory_starts(r.subject, r.order).sum() for r in recordings)),
        )
    row["fixations_per_trajectory"] = row["fixations"] / row["trajectories"]
    return row


def mouse_kde_at(eye: Fixations, mouse: Fixations, bandwidth: float) -> np.ndarray:
    """(N_eye,) KDE probability, at each eye fixation's pixel, of the mouse fixations on the same image.

    The KDE is `kde.kde_grid`'s (std ``bandwidth`` times the longer side, reflecting
    borders) evaluated with `kde.kernel_pairs`; 0 on images without mouse fixations.
    """
    rows_e, cols_e = eye.pixel_indices()
    rows_m, cols_m = mouse.pixel_indices()
    by_image = np.split(np.argsort(mouse.n, kind="stable"), np.cumsum(mouse.counts_per_image())[:-1])
    out = np.zeros(len(eye))
    for (h, w), groups in images_by_size(eye).items():
        k_rows, k_cols = blur_matrix(h, bandwidth * max(h, w)), blur_matrix(w, bandwidth * max(h, w))
        for idx in groups:
            m = by_image[eye.n[idx[0]]]
            if len(m):
                out[idx] = kernel_pairs(k_rows, k_cols, rows_e[idx], cols_e[idx], rows_m[m], cols_m[m]).mean(axis=1)
    return out


def fit_mouse_predictor(eye: Fixations, mouse: Fixations, centerbias_loglik: np.ndarray) -> tuple[dict, np.ndarray]:
    """ML fit of ``a KDE_mouse + b centre bias + c uniform`` to the eye fixations; (fit, (N,) log-lik nats)."""

    def components(bandwidth: float) -> np.ndarray:
        kde = safe_log(mouse_kde_at(eye, mouse, bandwidth))
        return np.stack([kde, centerbias_loglik, uniform_log_density(eye)], axis=1)

    bandwidth, weights, _ = fit_bandwidth(components, (0.002, 0.2))
    loglik = logsumexp(components(bandwidth) + safe_log(weights), axis=1)
    fit = {"bandwidth_rel_long_side": bandwidth, "kde_weight": float(weights[0]), "centerbias_weight": float(weights[1])}
    return fit, loglik


def likelihood_row(
    name: str, loglik: np.ndarray, centerbias_loglik: np.ndarray, eye: Fixations, gold_ig: float | None
) -> dict:
    """Mean LL and IG over the centre bias (bits/fixation), per-image IG > 0 share, % of the gold IG."""
    pixels = np.prod(eye.image_sizes[eye.n], axis=1)
    ll, ig = bits_over_uniform(loglik, pixels), (loglik - centerbias_loglik) / np.log(2.0)
    row = {
        "model": name,
        "ll_bits": float(ll.mean()),
        "ig_bits": float(ig.mean()),
        "images_with_positive_ig_pct": float(100 * np.mean(per_image_means(ig, eye.n) > 0)),
    }
    if gold_ig is not None:
        row["ig_of_gold_pct"] = 100.0 * row["ig_bits"] / gold_ig
    return row


def markdown(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A markdown table of ``rows`` with (key, header, format) ``columns``; blank for None."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = ["" if row.get(k) is None else format(row[k], f) for k, _, f in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COUNT_COLUMNS = [
    ("source", "source", "s"), ("images", "images", "d"), ("observers", "observers", "d"),
    ("samples", "mouse samples", ",d"), ("trajectories", "trajectories", ",d"), ("fixations", "fixations", ",d"),
    ("fixations_per_image_mean", "per image (mean)", ".1f"), ("fixations_per_image_min", "min", "d"),
    ("fixations_per_image_max", "max", "d"), ("fixations_per_trajectory", "per trajectory", ".2f"),
]
LIKELIHOOD_COLUMNS = [
    ("model", "eye fixations scored under", "s"), ("ll_bits", "LL (bits/fix)", ".3f"),
    ("ig_bits", "IG over centre bias (bits/fix)", ".3f"), ("ig_of_gold_pct", "% of gold IG", ".1f"),
    ("images_with_positive_ig_pct", "images with IG > 0 (%)", ".1f"),
]


def step_table(densities: dict[str, np.ndarray]) -> str:
    rows = [
        {"bin": f"{a:.1f}-{b:.1f}", **{name: d[k] for name, d in densities.items()}}
        for k, (a, b) in enumerate(zip(STEP_EDGES_PX[:-1], STEP_EDGES_PX[1:]))
    ]
    return markdown(rows, [("bin", "step (px)", "s"), *((name, f"{name} density", ".4f") for name in densities)])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None, help="OSIE folder (default: discovered, see data.osie)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    started = time.time()
    root = osie.find_osie_root(args.root)
    config = PseudoFixationConfig()
    print(f"OSIE at {root}; pseudo-fixations: {dataclasses.asdict(config)}", file=sys.stderr)

    eye = osie.osie_eye(root)
    counts, steps, step_lengths_by_source, mouse = [count_row("eye", eye, None)], {}, {}, {}
    for source in osie.MOUSE_SOURCES:
        _, recordings = osie.read_mouse_source(root, source)
        mouse[source] = osie.osie_mouse(root, source, config)
        if mouse[source].stimulus_names != eye.stimulus_names:
            raise ValueError(f"OSIE mouse {source} and eye list different images under {root}")
        counts.append(count_row(f"mouse {source}", mouse[source], recordings))
        step_lengths_by_source[source] = step_lengths(recordings)
        steps[source] = step_density(step_lengths_by_source[source])
    slow_ends = {source: slow_mode_end(d) for source, d in steps.items()}

    sizes = paper_sizes(eye.image_sizes)
    eye_fix = eye.fixations.rescaled(sizes)
    print("fitting the centre bias and the gold standard...", file=sys.stderr)
    cb = fit_center_bias(eye_fix)
    cb_loglik = leave_one_image_out(eye_fix, cb.bandwidth, cb.uniform_weight)
    gold_loglik = gold_standard_loglik(eye_fix, cb_loglik, fit_gold_standard(eye_fix, cb_loglik))
    gold_ig = float(np.mean(gold_loglik - cb_loglik) / np.log(2.0))
    scored = [("centre bias (eye, leave one image out)", cb_loglik)]
    fits = {}
    for source, dataset in mouse.items():
        print(f"fitting the mouse {source} predictor...", file=sys.stderr)
        fits[source], loglik = fit_mouse_predictor(eye_fix, dataset.fixations.rescaled(sizes), cb_loglik)
        scored.append((f"KDE of mouse {source} pseudo-fixations + centre bias + uniform", loglik))
    scored.append(("gold standard (other eye observers)", gold_loglik))
    likelihood = [likelihood_row(name, ll, cb_loglik, eye_fix, gold_ig) for name, ll in scored]

    print("## Counts\n\n" + markdown(counts, COUNT_COLUMNS))
    print("\n## Step lengths between consecutive mouse samples\n\n" + step_table(steps))
    for source, (a, b, plateau) in slow_ends.items():
        share = 100 * np.mean(step_lengths_by_source[source] > config.max_step_px)
        print(
            f"\n{source}: plateau density {plateau:.4f} (least populated bin in {PLATEAU_RANGE_PX[0]:g}-"
            f"{PLATEAU_RANGE_PX[1]:g} px); slow mode ended by the {a:.1f}-{b:.1f} px bin; "
            f"{share:.1f}% of steps exceed max_step_px = {config.max_step_px:g} px"
        )
    print("\n## Eye fixations at 512x384 under mouse-based densities\n\n" + markdown(likelihood, LIKELIHOOD_COLUMNS))
    for source, fit in fits.items():
        print(f"\nmouse {source} fit: " + ", ".join(f"{k} {v:.4f}" for k, v in fit.items()))
    print(f"\n({time.time() - started:.0f} s)", file=sys.stderr)
    report = {
        "pseudo_fixation_config": dataclasses.asdict(config),
        "counts": counts,
        "step_slow_mode_end_px_and_plateau": slow_ends,
        "likelihood": likelihood,
        "mouse_fits": fits,
        "centerbias_fit": {"bandwidth_rel": cb.bandwidth, "uniform_weight": cb.uniform_weight},
    }
    if args.out is not None:
        write_atomic(args.out, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
