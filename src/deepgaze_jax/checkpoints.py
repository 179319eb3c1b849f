"""Orbax checkpoints of a training state, verified by a digest.

Orbax `CheckpointManager`, one step per epoch, holding the whole training state
(parameters, optimiser state, epoch, RNG key, histories, best parameters) and a
SHA-256 digest of it; restoring verifies the digest and falls back to the
previous step if the latest is unreadable. An unusable step is moved out of the
way, into ``<directory>.quarantine/`` (kept for inspection, never read again), so
that the run can save that step anew.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No usable checkpoint although some exist (all truncated or corrupt)."""


def tree_digest(tree) -> str:
    """SHA-256 over the structure, dtypes, shapes and bytes of a pytree's leaves."""
    h = hashlib.sha256(str(jax.tree_util.tree_structure(tree)).encode())
    for leaf in jax.tree_util.tree_leaves(tree):
        arr = np.asarray(leaf)
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def checkpoint_manager(directory: str | Path, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """A manager keeping the last ``max_to_keep`` epochs under ``directory``; use it in a ``with`` block.

    Saving is asynchronous: `save_checkpoint` returns once the state is copied to the host, and the files
    are written while the next epoch runs (synchronous saves of the at-once crossvalidation's state
    blocked for 0.34 s each in a profile of the README's command). A step appears on disk only once all of it is written, so an
    interrupted save leaves the previous step to resume from; leaving the ``with`` block (``close``)
    waits for the last save.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=True, create=True)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save_checkpoint(manager: ocp.CheckpointManager, state) -> None:
    """Saves ``state`` (a pytree with an ``epoch`` field) as step ``max(state.epoch)`` with its digest."""
    manager.save(
        int(np.max(np.asarray(state.epoch))),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), digest=ocp.args.JsonSave({"sha256": tree_digest(state)})
        ),
        force=True,
    )


def finish_saving(manager: ocp.CheckpointManager | None) -> None:
    """Waits until ``manager``'s saves in flight are on disk (nothing without a manager)."""
    if manager is not None:
        manager.wait_until_finished()


def quarantine_step(manager: ocp.CheckpointManager, step: int) -> Path:
    """Moves step ``step`` to ``<directory>.quarantine/<step>-<unix time>`` and makes ``manager`` forget it."""
    directory = Path(manager.directory)
    target = directory.with_name(directory.name + ".quarantine") / f"{step}-{time.time_ns()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(directory / str(step)), str(target))
    manager.reload()
    return target


def resume(manager: ocp.CheckpointManager, state, name: str, log: Callable[[str], None]):
    """``state`` restored from ``manager``'s latest verified checkpoint (`restore_checkpoint`), with a log
    line naming ``name`` and the epoch, or ``state`` itself when there is none."""
    restored = restore_checkpoint(manager, state)
    if restored is None:
        return state
    log(f"{name}: resuming from epoch {int(np.max(np.asarray(restored.epoch)))}")
    return restored


def restore_checkpoint(manager: ocp.CheckpointManager, template):
    """The latest verified checkpoint restored into ``template``'s structure, or None if there is none.

    A step that fails to load or whose digest does not match is quarantined
    (`quarantine_step`) with a warning, falling back to the previous step; if every
    step fails, raises `CheckpointError` (the steps stay where they are).
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    steps = sorted(manager.all_steps(), reverse=True)
    errors = []
    for step in steps:
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), digest=ocp.args.JsonRestore()),
            )
            state, digest = restored["state"], restored["digest"]["sha256"]
            if tree_digest(state) != digest:
                raise CheckpointError(f"digest mismatch at step {step}")
        except Exception as exc:  # noqa: BLE001 - any failure to read a step means: try the previous one
            errors.append((step, f"step {step}: {exc}"))
            continue
        for bad, reason in errors:
            moved = quarantine_step(manager, bad)
            logger.warning("checkpoint %s is unusable (%s); moved it to %s, resuming from step %d", bad, reason, moved, step)
        return state
    if steps:
        raise CheckpointError(
            f"no usable checkpoint in {manager.directory}: " + "; ".join(r for _, r in errors)
            + "; delete that directory to train from the start"
        )
    return None
