"""Training the readout on cached features: loss, jitted steps, early stopping, checkpoints, devices.

In the style of Flax's ``examples/imagenet``: one explicit state pytree
(`TrainState`), pure `train_epoch` / `eval_loss` functions compiled once, and a
loop (`fit`) that logs, evaluates and checkpoints at clear points.

Loss. The negative log-likelihood of the fixations in **nats per fixation,
relative to a uniform density**. A fixation at working pixel (x, y) lies in cell
(floor(y / cell), floor(x / cell)) of the density grid; by the exact-upsampling
identity (`finalizer.expand_to_pixels`) log p_pixel = log p_cell - 2 log(cell), so

    LL_vs_uniform = log p_pixel + log(h * w) = log p_cell + log(H * W)

for an h x w working image with an H x W density grid. As in the paper, every
fixation counts the same: the loss is the mean over *all* fixations of the
training set, so images with more fixations weigh more. Fixations enter as
per-image count maps on the density grid (`ShapeGroup.counts`); the sum of
counts x LL over cells is the sum over fixations.

Optimiser. Full-batch L-BFGS (`optax.lbfgs`, zoom line search) over the whole
training set, in the spirit of the paper's SFO; Adam over shuffled minibatches
is the alternative (`TrainConfig.optimizer`). An *epoch* is one L-BFGS iteration
(one full-batch step with its line search) or one pass over the training images
with Adam. Regularisation: an L2 penalty on the readout's weight matrices
(``weight_decay``, default 0.01, times their sum of squares, added to the
objective only; reported losses are pure NLL) besides early stopping; the blur
width is bounded by the finalizer's clip. Without the penalty full-batch L-BFGS
overfits MIT1003 within ~15 epochs (Lite0 10-fold crossvalidation: 76.0% IG
explained without, 78.7% with 0.01). The value was picked on the held-out loss
of folds 0 and 3 (0.01 and 0.03 gave about the same; 0.1 collapsed the readout
to the centre bias), so that figure is mildly optimistic.

Stopping rule (paper, section 2.4): train at least ``min_epochs`` (20) epochs;
stop as soon as each of the last ``window`` (3) epochs has a validation loss
worse than that of the epoch ``lookback`` (5) epochs before it; at most
``max_epochs`` (800). The parameters of the best validation epoch are kept.

Devices. Images are sharded over all local devices along the mesh axis
``"data"`` (`jax.shard_map`); each device sums log-likelihood and fixation count
over its images and the sums are ``psum``-ed, so the shard-mapped function *is*
the global mean loss, and ``jax.grad`` of it is the global gradient (the
gradient of a replicated parameter under ``shard_map`` is already summed over
devices: ``psum``-ing it again would multiply it by the device count). Image
counts are padded to a multiple of the device count with zero-count images.

Checkpoints. Orbax `CheckpointManager`, one step per epoch, holding the whole
`TrainState` (parameters, optimiser state, epoch, RNG key, histories, best
parameters) and a SHA-256 digest of it; restoring verifies the digest and falls
back to the previous step if the latest is unreadable. Resuming reaches bit-exact
the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.model import ModelConfig, SaliencyHead

logger = logging.getLogger(__name__)

DATA_AXIS = "data"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimiser and stopping rule.

    Attributes:
      optimizer: "lbfgs" (full batch, one iteration per epoch) or "adam" (minibatches, one pass per epoch).
      lbfgs_memory: number of L-BFGS curvature pairs.
      weight_decay: lambda of the penalty lambda * sum of squared readout weights, added to the
        training objective (not to the reported losses).
      learning_rate, batch_size: Adam's step size and images per minibatch.
      min_epochs, max_epochs, lookback, window: the stopping rule (module docstring).
      seed: seeds the head's initialisation and Adam's shuffling.
    """

    optimizer: str = "lbfgs"
    lbfgs_memory: int = 10
    weight_decay: float = 0.01
    learning_rate: float = 1e-3
    batch_size: int = 32
    min_epochs: int = 20
    max_epochs: int = 800
    lookback: int = 5
    window: int = 3
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")


# ----------------------------------------------------------------------------- data


@flax.struct.dataclass
class ShapeGroup:
    """The training images of one working shape, as arrays on device.

    Attributes:
      grids: (N, h, w, C) feature grids (float16, bfloat16 or float32).
      log_centerbias: (N, H, W) float32 log centre-bias density on the density grid.
      counts: (N, H, W) float32 number of fixations in each cell (all zero for padding images).
      valid: (N,) bool, False for the images that only pad N to a multiple of the device count.
    """

    grids: jnp.ndarray
    log_centerbias: jnp.ndarray
    counts: jnp.ndarray
    valid: jnp.ndarray

    @property
    def num_images(self) -> int:
        return int(self.grids.shape[0])


def fixation_counts(fixations: Fixations, image_indices: Sequence[int], grid_shape: tuple[int, int], cell: int) -> np.ndarray:
    """(len(image_indices), H, W) float32 fixation counts per density-grid cell.

    ``fixations`` are in working-space pixels; a fixation at (x, y) counts in cell
    (floor(y / cell), floor(x / cell)).
    """
    image_indices = np.asarray(image_indices, np.int64)
    position = np.full(fixations.num_images, -1, np.int64)
    position[image_indices] = np.arange(len(image_indices))
    keep = position[fixations.n] >= 0
    rows = np.minimum(np.floor(fixations.y[keep] / cell).astype(np.int64), grid_shape[0] - 1)
    cols = np.minimum(np.floor(fixations.x[keep] / cell).astype(np.int64), grid_shape[1] - 1)
    counts = np.zeros((len(image_indices), *grid_shape), np.float32)
    np.add.at(counts, (position[fixations.n[keep]], rows, cols), 1.0)
    return counts


def make_groups(
    grids: Sequence[np.ndarray],
    log_centerbias: Sequence[np.ndarray],
    fixations: Fixations,
    image_indices: Sequence[int],
    cell: int,
    mesh: Mesh | None = None,
    dtype: np.dtype = np.float32,
) -> tuple[ShapeGroup, ...]:
    """Groups images ``image_indices`` by grid shape into padded `ShapeGroup`s sharded over ``mesh``.

    Args:
      grids: per image of the dataset, (h, w, C) features (a memory map is fine).
      log_centerbias: per image of the dataset, (H, W) log centre bias on its density grid.
      fixations: working-space fixations on the dataset's images.
      image_indices: the images to put in the groups.
      cell: density-grid cell size in working pixels.
      mesh: device mesh with axis ``"data"``; default `data_mesh()`.
      dtype: of the grids on device. float32 by default: on CPU a float16 grid costs a
        conversion in every loss evaluation (measured 2x slower per L-BFGS step).
    """
    mesh = data_mesh() if mesh is None else mesh
    devices = mesh.shape[DATA_AXIS]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i in image_indices:
        by_shape.setdefault(tuple(grids[i].shape), []).append(int(i))
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    groups = []
    for shape in sorted(by_shape):
        members = by_shape[shape]
        pad = -len(members) % devices
        cb_shape = tuple(np.shape(log_centerbias[members[0]]))
        grid_arr = np.zeros((len(members) + pad, *shape), dtype)
        cb_arr = np.zeros((len(members) + pad, *cb_shape), np.float32)
        for j, i in enumerate(members):
            grid_arr[j] = grids[i]
            cb_arr[j] = log_centerbias[i]
        cb_arr[len(members):] = cb_arr[0]
        counts = np.zeros((len(members) + pad, *cb_shape), np.float32)
        counts[: len(members)] = fixation_counts(fixations, members, cb_shape, cell)
        valid = np.arange(len(members) + pad) < len(members)
        groups.append(ShapeGroup(*(jax.device_put(a, sharding) for a in (grid_arr, cb_arr, counts, valid))))
    return tuple(groups)


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices) with axis ``"data"``."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def feature_stats(grids: Sequence[np.ndarray], image_indices: Sequence[int]) -> dict[str, jnp.ndarray]:
    """Per-channel mean and std of the features of ``image_indices`` (the readout's ``"stats"``).

    Accumulated in float64 over all grid positions; std is floored at 1e-6.
    """
    total = count = sq = 0.0
    for i in image_indices:
        g = np.asarray(grids[i], np.float64).reshape(-1, grids[i].shape[-1])
        total = total + g.sum(0)
        sq = sq + (g * g).sum(0)
        count += g.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
    return {"readout": {"mean": jnp.asarray(mean, jnp.float32), "std": jnp.asarray(np.maximum(std, 1e-6), jnp.float32)}}


# ----------------------------------------------------------------------------- loss


def log_likelihood_sum(config: ModelConfig, variables, group: ShapeGroup) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(sum over fixations of LL vs uniform in nats, number of fixations) for one group."""
    log_density = SaliencyHead(config).apply(variables, group.grids, group.log_centerbias)
    cells = log_density.shape[-2] * log_density.shape[-1]
    return jnp.sum(group.counts * (log_density + math.log(cells))), jnp.sum(group.counts)


def make_loss_fn(config: ModelConfig, mesh: Mesh) -> Callable[[Any, Any, tuple[ShapeGroup, ...]], jnp.ndarray]:
    """``loss(params, stats, groups)``: mean NLL vs uniform over all fixations of ``groups`` (nats/fix).

    The groups are sharded over ``mesh``; the result is the global mean (see module docstring).
    """

    def local(params, stats, groups):
        total = count = jnp.zeros((), jnp.float32)
        for group in groups:
            s, c = log_likelihood_sum(config, {"params": params, "stats": stats}, group)
            total, count = total + s, count + c
        total, count = jax.lax.psum((total, count), DATA_AXIS)
        return -total / jnp.maximum(count, 1.0)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS)), out_specs=P())


def l2_norm_squared(params) -> jnp.ndarray:
    """Sum of squares of the readout's weight matrices (the ``kernel`` leaves; no biases, no finalizer)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return sum(jnp.sum(x**2) for path, x in leaves if getattr(path[-1], "key", None) == "kernel")


# ----------------------------------------------------------------------------- state


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue bit-exact (one pytree, checkpointed whole).

    Attributes:
      epoch: () int32, epochs done.
      params: the head's trainable Flax params (no mixture axis).
      stats: the head's fixed ``"stats"`` collection (feature mean and std).
      opt_state: the optax state.
      rng: PRNG key (raw uint32) for Adam's shuffling.
      best_params: params of the best validation epoch so far.
      best_epoch: () int32, that epoch (0: the initial params).
      train_loss, val_loss: (max_epochs + 1,) float32 loss per epoch (index 0: before training), NaN when not run.
    """

    epoch: jnp.ndarray
    params: Any
    stats: Any
    opt_state: Any
    rng: jnp.ndarray
    best_params: Any
    best_epoch: jnp.ndarray
    train_loss: jnp.ndarray
    val_loss: jnp.ndarray

    def head_variables(self, best: bool = True):
        """Flax variables of `SaliencyHead` (best or current params) without a mixture axis."""
        return {"params": self.best_params if best else self.params, "stats": self.stats}


def make_optimizer(train_config: TrainConfig) -> optax.GradientTransformationExtraArgs:
    """L-BFGS with a zoom line search, or Adam."""
    if train_config.optimizer == "lbfgs":
        return optax.lbfgs(memory_size=train_config.lbfgs_memory)
    return optax.adam(train_config.learning_rate)


def create_train_state(
    config: ModelConfig, train_config: TrainConfig, stats, params=None, key: jax.Array | None = None
) -> TrainState:
    """A fresh state: ``params`` (e.g. pretrained) or a random init from ``key`` (default: the seed)."""
    key = jax.random.PRNGKey(train_config.seed) if key is None else key
    init_key, rng = jax.random.split(key)
    if params is None:
        channels = stats["readout"]["mean"].shape[0]
        grid = jnp.zeros((1, 2, 2, channels), jnp.float32)
        params = SaliencyHead(config).init(init_key, grid, jnp.zeros((1, 4, 4), jnp.float32))["params"]
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    history = jnp.full((train_config.max_epochs + 1,), jnp.nan, jnp.float32)
    return TrainState(
        epoch=jnp.zeros((), jnp.int32),
        params=params,
        stats=stats,
        opt_state=make_optimizer(train_config).init(params),
        rng=rng,
        best_params=params,
        best_epoch=jnp.zeros((), jnp.int32),
        train_loss=history,
        val_loss=history,
    )


# ----------------------------------------------------------------------------- steps


@dataclasses.dataclass(frozen=True)
class Steps:
    """The compiled functions of one run (built by `make_steps`).

    Attributes:
      loss: ``(params, stats, groups) -> ()`` mean NLL vs uniform (nats/fix).
      train_epoch: ``(state, groups) -> (state, loss)`` one epoch on the training groups, and the
        training loss at the new params.
      record: ``(state, train_loss, val_loss) -> state`` stores the losses of the epoch just run
        and updates the best params.
      mesh: the device mesh they run on.
    """

    loss: Callable
    train_epoch: Callable
    record: Callable
    mesh: Mesh

    def replicate(self, state: TrainState) -> TrainState:
        """``state`` as the compiled functions return it: strongly typed, replicated over the mesh.

        A fresh or restored state differs in weak types and shardings, which would cost
        one more compilation of every step.
        """
        replicated = NamedSharding(self.mesh, P())
        return jax.tree_util.tree_map(lambda x: jax.device_put(np.asarray(x), replicated), state)


def make_steps(config: ModelConfig, train_config: TrainConfig, mesh: Mesh | None = None) -> Steps:
    """Jitted loss and epoch functions for ``config`` on ``mesh`` (default: all devices).

    Plain `jax.jit`, without `xla_options.jit`'s YNNPACK option: on cached grids it made
    epochs 4-13% slower on CPU (interleaved A/B, docs/benchmarks.md).
    """
    mesh = data_mesh() if mesh is None else mesh
    loss = make_loss_fn(config, mesh)
    jitted_loss = jax.jit(loss)
    tx = make_optimizer(train_config)

    def penalty(params):
        return train_config.weight_decay * l2_norm_squared(params)

    def lbfgs_epoch(state: TrainState, groups):
        def value_fn(params):
            return loss(params, state.stats, groups) + penalty(params)

        value, grad = optax.value_and_grad_from_state(value_fn)(state.params, state=state.opt_state)
        updates, opt_state = tx.update(grad, state.opt_state, state.params, value=value, grad=grad, value_fn=value_fn)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(params=params, opt_state=opt_state, epoch=state.epoch + 1)
        # the line search's objective at the new params, less the penalty: the training NLL
        return new_state, optax.tree_utils.tree_get(opt_state, "value") - penalty(params)

    @functools.partial(jax.jit, static_argnames="group_index")
    def adam_step(params, opt_state, stats, groups, group_index, indices, weights):
        batch = tuple(
            ShapeGroup(g.grids[indices], g.log_centerbias[indices], g.counts[indices] * weights[:, None, None], g.valid[indices])
            if k == group_index else jax.tree_util.tree_map(lambda a: a[:0], g)
            for k, g in enumerate(groups)
        )
        grad = jax.grad(lambda p: loss(p, stats, batch) + penalty(p))(params)
        updates, opt_state = tx.update(grad, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def adam_epoch(state: TrainState, groups):
        rng, key = jax.random.split(state.rng)
        params, opt_state = state.params, state.opt_state
        for group_index, indices, weights in minibatches(groups, train_config.batch_size, mesh.shape[DATA_AXIS], key):
            params, opt_state = adam_step(params, opt_state, state.stats, groups, group_index, indices, weights)
        new_state = state.replace(params=params, opt_state=opt_state, rng=rng, epoch=state.epoch + 1)
        return new_state, jitted_loss(params, state.stats, groups)

    @jax.jit
    def record(state: TrainState, train_loss, val_loss):
        improved = val_loss < jnp.nanmin(state.val_loss)
        return state.replace(
            train_loss=state.train_loss.at[state.epoch].set(train_loss),
            val_loss=state.val_loss.at[state.epoch].set(val_loss),
            best_params=jax.tree_util.tree_map(
                lambda b, p: jnp.where(improved, p, b), state.best_params, state.params
            ),
            best_epoch=jnp.where(improved, state.epoch, state.best_epoch),
        )

    train_epoch = jax.jit(lbfgs_epoch) if train_config.optimizer == "lbfgs" else adam_epoch
    return Steps(loss=jitted_loss, train_epoch=train_epoch, record=record, mesh=mesh)


def minibatches(groups: Sequence[ShapeGroup], batch_size: int, multiple: int, key: jax.Array):
    """Yields (group index, (B,) int32 image indices, (B,) float32 weights) covering every valid image once.

    The valid images are shuffled within each group and the batches of all groups
    interleaved at random; the last batch of a group is padded with weight-0 images so
    that B (``batch_size`` rounded up to ``multiple``) is fixed (one compilation per
    group). The batches do not depend on the device count when ``multiple`` divides
    ``batch_size``.
    """
    size = -(-batch_size // multiple) * multiple
    rng = np.random.default_rng(np.asarray(key, np.uint32))
    batches = []
    for k, group in enumerate(groups):
        order = rng.permutation(np.flatnonzero(np.asarray(group.valid)))
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            weights = np.zeros(size, np.float32)
            weights[: len(idx)] = 1.0
            batches.append((k, np.pad(idx, (0, size - len(idx))).astype(np.int32), weights))
    for j in rng.permutation(len(batches)):
        yield batches[j]


# ----------------------------------------------------------------------------- stopping


def should_stop(val_loss: np.ndarray, epoch: int, train_config: TrainConfig) -> bool:
    """The paper's stopping rule on the (max_epochs + 1,) validation-loss history after ``epoch`` epochs."""
    if epoch >= train_config.max_epochs:
        return True
    if epoch < train_config.min_epochs:
        return False
    recent = np.arange(epoch - train_config.window + 1, epoch + 1)
    return bool(np.all(val_loss[recent] > val_loss[recent - train_config.lookback]))


# ----------------------------------------------------------------------------- checkpoints


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
    """A synchronous manager keeping the last ``max_to_keep`` epochs under ``directory``."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState) -> None:
    """Saves ``state`` as step ``state.epoch`` with its digest."""
    manager.save(
        int(state.epoch),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), digest=ocp.args.JsonSave({"sha256": tree_digest(state)})
        ),
        force=True,
    )


def restore_checkpoint(manager: ocp.CheckpointManager, template: TrainState) -> TrainState | None:
    """The latest verified checkpoint restored into ``template``'s structure, or None if there is none.

    A step that fails to load or whose digest does not match is skipped with a
    warning (falling back to the previous step); if every step fails, raises
    `CheckpointError`.
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
            return state
        except Exception as exc:  # noqa: BLE001 - any failure to read a step means: try the previous one
            logger.warning("checkpoint step %d in %s is unusable (%s); trying the previous one", step, manager.directory, exc)
            errors.append(f"step {step}: {exc}")
    if steps:
        raise CheckpointError(f"no usable checkpoint in {manager.directory}: " + "; ".join(errors))
    return None


# ----------------------------------------------------------------------------- loop


def fit(
    state: TrainState,
    train_groups: tuple[ShapeGroup, ...],
    val_groups: tuple[ShapeGroup, ...],
    steps: Steps,
    train_config: TrainConfig,
    manager: ocp.CheckpointManager | None = None,
    stop_at: int | None = None,
    log: Callable[[str], None] = logger.info,
    desc: str = "train",
) -> TrainState:
    """Trains until the stopping rule fires (or epoch ``stop_at``), checkpointing every epoch.

    ``state`` at epoch 0 is first evaluated (history index 0). Returns the final
    state; its ``best_params`` are the ones to use.
    """
    state = steps.replicate(state)
    if int(state.epoch) == 0 and np.isnan(np.asarray(state.val_loss[0])):
        state = steps.record(
            state, steps.loss(state.params, state.stats, train_groups), steps.loss(state.params, state.stats, val_groups)
        )
        if manager is not None:
            save_checkpoint(manager, state)
    limit = train_config.max_epochs if stop_at is None else min(stop_at, train_config.max_epochs)
    epoch = int(state.epoch)
    bar = tqdm(total=limit, initial=epoch, desc=desc, unit="epoch", leave=False)
    while epoch < limit and not should_stop(np.asarray(state.val_loss), epoch, train_config):
        state, train_loss = steps.train_epoch(state, train_groups)
        state = steps.record(state, train_loss, steps.loss(state.params, state.stats, val_groups))
        epoch = int(state.epoch)
        if manager is not None:
            save_checkpoint(manager, state)
        train_loss, val_loss = float(state.train_loss[epoch]), float(state.val_loss[epoch])
        bar.update(1)
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        log(
            f"{desc} epoch {epoch}: train NLL {train_loss:.5f} nats/fix, val NLL {val_loss:.5f} nats/fix"
            f" (best epoch {int(state.best_epoch)})"
        )
    bar.close()
    return state


def history_json(state: TrainState) -> str:
    """The loss histories of the epochs run, as JSON (nats/fix)."""
    n = int(state.epoch) + 1
    return json.dumps(
        {
            "train_nll_nats": np.asarray(state.train_loss[:n]).tolist(),
            "val_nll_nats": np.asarray(state.val_loss[:n]).tolist(),
            "best_epoch": int(state.best_epoch),
        }
    )
