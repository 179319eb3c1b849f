"""Training the readout on cached features: state, jitted steps, early stopping, the loop.

In the style of Flax's ``examples/imagenet``: one explicit state pytree
(`TrainState`), pure `train_epoch` / `eval_loss` functions compiled once, and a
loop (`fit`) that logs, evaluates and checkpoints at clear points.

Loss: `likelihood.py` (mean NLL over all fixations, nats/fix vs uniform, shard-mapped
over the devices); inputs: `input_pipeline.py` (shape groups, mesh, feature statistics);
checkpoints: `checkpoints.py`.

Optimiser. Full-batch L-BFGS (`optax.scale_by_lbfgs` with the strong-Wolfe line search of
`linesearch.py`; ``line_search="zoom"`` is `optax.lbfgs` as before) over the whole
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

Checkpoints: one step per epoch holding the whole `TrainState`, verified on restore;
resuming reaches bit-exact the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from deepgaze_jax.checkpoints import finish_saving, save_checkpoint
from deepgaze_jax.input_pipeline import DATA_AXIS, ShapeGroup, data_mesh, minibatches
from deepgaze_jax.likelihood import l2_norm_squared, make_loss_fn
from deepgaze_jax.linesearch import scale_by_wolfe_linesearch
from deepgaze_jax.model import ModelConfig, init_head_variables

logger = logging.getLogger(__name__)


LINE_SEARCHES = ("wolfe", "zoom")


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
      line_search: L-BFGS's line search: "wolfe" (`linesearch.scale_by_wolfe_linesearch`, one
        evaluation per iteration also when K models train at once) or "zoom"
        (`optax.scale_by_zoom_linesearch`, the runs before it; fold by fold only).
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
    line_search: str = "wolfe"

    def __post_init__(self):
        if self.optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        if self.line_search not in LINE_SEARCHES:
            raise ValueError(f"line_search must be one of {', '.join(LINE_SEARCHES)}, got {self.line_search!r}")


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


def make_optimizer(train_config: TrainConfig, has_aux: bool = False) -> optax.GradientTransformationExtraArgs:
    """L-BFGS with the configured line search (``has_aux``: see `linesearch.scale_by_wolfe_linesearch`), or Adam."""
    if train_config.optimizer == "adam":
        return optax.adam(train_config.learning_rate)
    if train_config.line_search == "zoom":
        return optax.lbfgs(memory_size=train_config.lbfgs_memory)
    return optax.chain(*lbfgs_direction_links(train_config), scale_by_wolfe_linesearch(has_aux=has_aux))


def lbfgs_direction_links(train_config: TrainConfig) -> tuple[optax.GradientTransformation, ...]:
    """The links of the L-BFGS chain before its line search: they turn the gradient into the descent direction."""
    return optax.scale_by_lbfgs(memory_size=train_config.lbfgs_memory), optax.scale(-1.0)


def create_train_state(
    config: ModelConfig, train_config: TrainConfig, stats, params=None, key: jax.Array | None = None
) -> TrainState:
    """A fresh state: ``params`` (e.g. pretrained) or a random init from ``key`` (default: the seed)."""
    key = jax.random.PRNGKey(train_config.seed) if key is None else key
    init_key, rng = jax.random.split(key)
    if params is None:
        params = init_head_variables(config, init_key, stats["readout"]["mean"].shape[0])["params"]
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


def weight_penalty(train_config: TrainConfig, params) -> jnp.ndarray:
    """The L2 term of the training objective: ``weight_decay`` x `likelihood.l2_norm_squared`."""
    return train_config.weight_decay * l2_norm_squared(params)


def make_steps(config: ModelConfig, train_config: TrainConfig, mesh: Mesh | None = None) -> Steps:
    """Jitted loss and epoch functions for ``config`` on ``mesh`` (default: all devices).

    Plain `jax.jit`, without `xla_options.jit`'s YNNPACK option: on cached grids it made
    epochs 4-13% slower on CPU (interleaved A/B, docs/benchmarks.md).
    """
    mesh = data_mesh() if mesh is None else mesh
    loss = make_loss_fn(config, mesh)
    jitted_loss = jax.jit(loss)
    tx = make_optimizer(train_config)

    penalty = functools.partial(weight_penalty, train_config)

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

    train_epoch = jax.jit(lbfgs_epoch) if train_config.optimizer == "lbfgs" else adam_epoch
    return Steps(loss=jitted_loss, train_epoch=train_epoch, record=jax.jit(record_epoch), mesh=mesh)


def record_epoch(state: TrainState, train_loss, val_loss) -> TrainState:
    """``state`` with the losses of the epoch just run stored and the best params updated."""
    improved = val_loss < jnp.nanmin(state.val_loss)
    return state.replace(
        train_loss=state.train_loss.at[state.epoch].set(train_loss),
        val_loss=state.val_loss.at[state.epoch].set(val_loss),
        best_params=jax.tree_util.tree_map(lambda b, p: jnp.where(improved, p, b), state.best_params, state.params),
        best_epoch=jnp.where(improved, state.epoch, state.best_epoch),
    )


# ----------------------------------------------------------------------------- stopping


def should_stop(val_loss: np.ndarray, epoch: int, train_config: TrainConfig) -> bool:
    """The paper's stopping rule on the (max_epochs + 1,) validation-loss history after ``epoch`` epochs."""
    if epoch >= train_config.max_epochs:
        return True
    if epoch < train_config.min_epochs:
        return False
    recent = np.arange(epoch - train_config.window + 1, epoch + 1)
    return bool(np.all(val_loss[recent] > val_loss[recent - train_config.lookback]))


def line_search_failed(state: TrainState) -> np.ndarray:
    """Whether the last epoch's Wolfe line search found no point of sufficient decrease (step 0), per model
    of a stacked state (() for one model; False for other optimisers and before the first epoch).

    The epoch then left the parameters as they were, so every later epoch would repeat the same failed
    search: the model cannot improve (seen for one of 30 random Lite0 readouts, 0.6 nats/fix behind the
    others), and its validation loss, constant from there, would keep the stopping rule waiting for
    ``max_epochs``. Training stops it, keeping its best parameters.
    """
    step = optax.tree_utils.tree_get(state.opt_state, "step")
    if step is None:
        return np.zeros(np.shape(state.epoch), bool)
    return (np.asarray(step) == 0) & (np.asarray(state.epoch) > 0)


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
    """Trains until the stopping rule fires (or epoch ``stop_at``), checkpointing every epoch (the files are
    written while the next epoch runs, and are all on disk when it returns).

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
        if line_search_failed(state):
            log(f"{desc}: stopped after {epoch} epochs, its line search found no decrease (best epoch {int(state.best_epoch)})")
            break
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
    finish_saving(manager)
    return state


def history(state: TrainState) -> dict:
    """The loss histories of the epochs run (nats/fix) and the best epoch."""
    n = int(state.epoch) + 1
    return {
        "train_nll_nats": np.asarray(state.train_loss[:n]).tolist(),
        "val_nll_nats": np.asarray(state.val_loss[:n]).tolist(),
        "best_epoch": int(state.best_epoch),
    }


def history_json(state: TrainState) -> str:
    """`history` as JSON."""
    return json.dumps(history(state))
