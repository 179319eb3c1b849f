"""Pretraining the readout on one set of images, stopped on another (paper, section 2.4).

Shared by `experiments.pretrain_salicon` (SALICON, stopped on MIT1003) and
`experiments.pretrain_osie` (OSIE mouse pseudo-fixations, stopped on held-out OSIE eye
fixations). The readout starts from a random init, with feature statistics of the
training grids; each set is scored with its own centre bias template. The run is
resumable from ``<workdir>/checkpoints``; ``<workdir>/setup.json`` records what was
trained (a re-run with other data or configs is refused). Outputs::

    model.npz      the best readout as a one-component model (``--init`` of crossval_mit1003)
    history.json   losses per epoch (nats/fix), best epoch, the stopping set's NLL under its
                   centre bias alone (nats/fix; minus the best NLL: the IG over it), total seconds
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from deepgaze_jax import checkpoints, input_pipeline, training
from deepgaze_jax.atomic_file import write_atomic
from deepgaze_jax.crossvalidation import CENTERBIAS_TEMPLATE_SIZE, centerbias_grids, check_setup
from deepgaze_jax.centerbias import fit_center_bias
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.likelihood import log_likelihood_per_image
from deepgaze_jax.model import ModelConfig, save_head


@dataclasses.dataclass(frozen=True)
class Part:
    """Images to train or stop on: their feature grids, fixations and centre bias.

    Attributes:
      grids: per image, the (h, w, C) cached feature grid.
      fixations: working-space fixations on those images (image ``i`` is ``grids[i]``).
      template: the (256, 256) log centre bias the part is scored with.
      dtype: of the grids on device (float16 halves the memory of a large set).
    """

    grids: Sequence[np.ndarray]
    fixations: Fixations
    template: np.ndarray
    dtype: type = np.float32


def make_part(grids: Sequence[np.ndarray], fixations: Fixations, centerbias_fixations: Fixations | None = None,
              dtype: type = np.float32) -> Part:
    """A `Part` whose centre bias is fitted (maximum likelihood) on ``centerbias_fixations``, default ``fixations``."""
    fitted = fit_center_bias(fixations if centerbias_fixations is None else centerbias_fixations)
    return Part(grids, fixations, fitted.template(CENTERBIAS_TEMPLATE_SIZE), dtype)


def thinned(fixations: Fixations, per_image: int, seed: int = 0) -> Fixations:
    """At most ``per_image`` fixations of each image, drawn at random (seeded), all images kept.

    For centre-bias fits of dense data: `fit_center_bias`'s leave-one-image-out likelihood
    costs time and memory in the square of each image's count (OSIE's 630 training images
    with 1,350 mouse pseudo-fixations each make 1.1 billion pairs).
    """
    order = np.random.default_rng(seed).permutation(len(fixations))
    order = order[np.argsort(fixations.n[order], kind="stable")]
    image = fixations.n[order]
    rank = np.arange(len(order)) - np.searchsorted(image, image, side="left")
    keep = np.zeros(len(fixations), bool)
    keep[order[rank < per_image]] = True
    return fixations.select(keep)


def part_groups(part: Part, cell: int) -> tuple[input_pipeline.ShapeGroup, ...]:
    """The device groups of all images of ``part``."""
    log_cbs = centerbias_grids(part.template, part.fixations, cell)
    return input_pipeline.make_groups(part.grids, log_cbs, part.fixations, range(len(part.grids)), cell, dtype=part.dtype)


def centerbias_nll(groups: Sequence[input_pipeline.ShapeGroup]) -> float:
    """Mean NLL vs uniform (nats/fix) of the groups' fixations under their centre bias alone (no readout)."""
    total = sum(float(jnp.sum(log_likelihood_per_image(g.log_centerbias, g.counts))) for g in groups)
    return -total / max(sum(float(jnp.sum(g.counts)) for g in groups), 1.0)


def describe(part: Part) -> dict:
    """What `setup.json` records of a part: its numbers of images and fixations."""
    return {"num_images": len(part.grids), "num_fixations": len(part.fixations)}


def pretrain(
    train: Part,
    stop: Part,
    config: ModelConfig,
    train_config: training.TrainConfig,
    workdir: Path,
    setup: dict,
    log: Callable[[str], None],
    desc: str,
    stop_name: str,
) -> tuple[Path, training.TrainState]:
    """Trains (or resumes) the readout on ``train`` with the stopping rule on ``stop``; writes the outputs.

    ``setup`` (the data options of the caller) is stored in ``setup.json`` with the configs,
    ``stop_name`` (key ``stopping``) and both parts' sizes (keys ``train`` and ``stop``). Returns the model file and the final state.
    """
    started = time.time()
    check_setup(workdir, {**setup, "model_config": json.loads(config.to_json()),
                          "train_config": dataclasses.asdict(train_config), "stopping": stop_name,
                          "train": describe(train), "stop": describe(stop)}, what="pretraining run")
    train_groups, stop_groups = part_groups(train, config.cell), part_groups(stop, config.cell)
    stats = input_pipeline.feature_stats(train.grids, range(len(train.grids)))
    state = training.create_train_state(config, train_config, stats)
    with checkpoints.checkpoint_manager(workdir / "checkpoints") as manager:
        state = checkpoints.resume(manager, state, desc, log)
        log(f"{desc}: training on {len(train.grids)} images, stopping on {len(stop.grids)} ({stop_name})")
        state = training.fit(state, train_groups, stop_groups, training.make_steps(config, train_config), train_config,
                             manager, log=log, desc=desc)
    path = workdir / "model.npz"
    save_head(config, state.head_variables(), train.template, path)
    best_nll, centerbias_only = float(state.val_loss[int(state.best_epoch)]), centerbias_nll(stop_groups)
    history = training.history(state) | {"stop_centerbias_nll_nats": centerbias_only, "total_s": time.time() - started}
    write_atomic(workdir / "history.json", json.dumps(history, indent=1))
    log(f"pretrained readout (best epoch {int(state.best_epoch)}, {stop_name} NLL {best_nll:.4f} nats/fix, "
        f"IG over its centre bias {(centerbias_only - best_nll) / np.log(2):.3f} bits/fix) saved to {path}")
    return path, state
