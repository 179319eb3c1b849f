"""Training K readouts at once on the same cached grids (e.g. the folds x seeds of one backbone).

One jitted program per epoch serves all K models: every loss evaluation reads each
grid once for all of them (``jax.vmap`` over the model axis turns the first 1x1
layer of the K readouts into one matmul with K x 16 outputs), and each model keeps
its own

* training and validation images: per-model image weights (`ModelData`; 1 for the
  model's images, 0 elsewhere), so a fold's model never sees its held-out images;
* centre bias (one per model and grid shape) and feature statistics;
* L-BFGS state and line search (`training.make_optimizer` updated under ``vmap``, each
  model with its own objective; `linesearch.scale_by_wolfe_linesearch` evaluates the
  objective once per iteration for all models);
* stopping rule (`training.should_stop`): a model that has stopped is frozen, keeping
  its best parameters, while the others go on.

The state is a `training.TrainState` with a leading model axis, checkpointed whole
(`checkpoints.save_checkpoint`, one step per epoch) and resumed bit-exactly. The images
are sharded over the mesh axis ``"data"`` with ``jax.shard_map`` as in `likelihood`;
on each device the loss runs over its images in chunks (``lax.scan``) whose value and
gradient are computed in one pass (a ``custom_vjp``), so memory stays bounded whatever K.

Kernel time. XLA:CPU gives every call of a compiled function fresh memory for its
temporaries, and the kernel faults each of its pages in again at every call; a
whole-training-set loss (as `likelihood.make_loss_fn`) touches the activations of all
images per call, and about a quarter of the CPU time goes to the kernel. The chunks
here keep the temporaries to one chunk of all K models, which cuts the system time
to a few per cent of the user time.

Cost. The K line searches advance together, one evaluation per round, and a round evaluates
only the models whose search goes on, gathered (padded to a power of two, so that at most
about log2(K) + 1 sizes compile; `bucket`): a model that needs many trial steps costs about
1/K of an evaluation of all K per step, and a model that has stopped costs nothing. Every
evaluated model is computed on every image (its weights mask the others). The stopping
images' NLL comes from the same pass as the training objective (``has_aux``), so an
evaluation is one pass over the grids for the models evaluated.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deepgaze_jax import settings
from deepgaze_jax.checkpoints import finish_saving, save_checkpoint
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.input_pipeline import DATA_AXIS, data_mesh, group_by_shape, padded_size, stack_padded
from deepgaze_jax.likelihood import fixation_counts, log_likelihood_of_logits
from deepgaze_jax.finalizer import finalizer_logits, finalizer_maps
from deepgaze_jax.model import ModelConfig
from deepgaze_jax.linesearch import Search, begin_search, end_search, observe, searching, trial_params
from deepgaze_jax.training import (TrainConfig, TrainState, lbfgs_direction_links, line_search_failed, record_epoch,
                                   should_stop, weight_penalty)

logger = logging.getLogger(__name__)

CHUNK_IMAGE_MODELS = 256


def training_dtype(device: jax.Device | None = None) -> np.dtype:
    """bfloat16 on a GPU, float32 on a CPU.

    The grids on device and the readout's first matmul take this dtype; accumulation, the rest of
    the readout and the finalizer stay float32. CPUs with AMX-BF16 get float32 too: there bfloat16
    bought 6% per epoch and cost 0.006 bits/fixation of held-out LL on all of MIT1003
    (`docs/benchmarks.md`), three times the 0.002 that issue #11 allows.
    """
    device = jax.devices()[0] if device is None else device
    return np.dtype(jnp.bfloat16) if device.platform == "gpu" else np.dtype(np.float32)


DTYPES = ("auto", "float32", "bfloat16")
DTYPE_HELP = ("dtype of the feature grids and the readout's first matmul in training (float32 accumulation): "
              "auto (default) = $DEEPGAZE_JAX_TRAINING_DTYPE if set, else bfloat16 on a GPU, float32 on a CPU")


def dtype_of_flag(name: str) -> np.dtype | None:
    """``--dtype``: None for "auto" (`resolve_dtype` decides), else that dtype.

    >>> dtype_of_flag("bfloat16").name, dtype_of_flag("auto")
    ('bfloat16', None)
    """
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return None if name == "auto" else np.dtype(jnp.bfloat16 if name == "bfloat16" else np.float32)


def resolve_dtype(dtype: np.dtype | None = None) -> tuple[np.dtype, str]:
    """(training dtype, why) for ``dtype`` (None: "auto").

    "auto" is ``$DEEPGAZE_JAX_TRAINING_DTYPE`` where it names a dtype, else `training_dtype`.

    >>> resolve_dtype(np.float32)
    (dtype('float32'), 'as asked')
    """
    if dtype is not None:
        return np.dtype(dtype), "as asked"
    name = settings.training_dtype_name()
    try:
        chosen = dtype_of_flag(name)
    except ValueError:
        raise ValueError(f"${settings.TRAINING_DTYPE} must be one of {', '.join(DTYPES)}, got {name!r}") from None
    if chosen is not None:
        return chosen, f"${settings.TRAINING_DTYPE}"
    auto = training_dtype()
    return auto, f"auto: {jax.devices()[0].platform}"


@flax.struct.dataclass
class PoolGroup:
    """All images of one grid shape, shared by the K models, sharded over the images.

    Attributes:
      grids: (N, h, w, C) feature grids.
      counts: (N, H, W) float32 fixations per density-grid cell.
      fixations: (N,) float32 fixations per image.
      chunk: images per loss chunk on one device (static).
    """

    grids: jnp.ndarray
    counts: jnp.ndarray
    fixations: jnp.ndarray
    chunk: int = flax.struct.field(pytree_node=False)


@flax.struct.dataclass
class ModelData:
    """Per model (leading axis K), one entry per `PoolGroup`.

    Attributes:
      log_centerbias: tuple of (K, H, W) float32 log centre bias on the group's density grid.
      train, val: tuples of (K, N) float32 weights: 1 for the model's training (validation) images.
    """

    log_centerbias: tuple
    train: tuple
    val: tuple


def chunking(images: int, devices: int, target: int) -> tuple[int, int]:
    """(chunk, padded image count): per device ``ceil(images / devices)`` images in near-equal chunks."""
    local = -(-images // devices)
    chunks = -(-local // target)
    chunk = -(-local // chunks)
    return chunk, chunk * chunks * devices


def make_pool(
    grids: Sequence[np.ndarray],
    fixations: Fixations,
    centerbias: Sequence[Callable[[tuple[int, int]], np.ndarray]],
    train_images: Sequence[Sequence[int]],
    val_images: Sequence[Sequence[int]],
    cell: int,
    mesh: Mesh | None = None,
    dtype: np.dtype = np.float32,
    chunk_images: int | None = None,
) -> tuple[tuple[PoolGroup, ...], ModelData]:
    """The groups of every image any model uses and the K models' `ModelData`.

    Args:
      grids: per image of the dataset, (h, w, C) features.
      fixations: working-space fixations on the dataset's images.
      centerbias: per model, a function from a density-grid shape (H, W) to its (H, W) log centre
        bias there, e.g. ``functools.partial(model.centerbias_on_grid, template)``.
      train_images, val_images: per model, the images it trains on and stops on.
      cell: density-grid cell size in working pixels.
      mesh: device mesh with axis ``"data"``; default `data_mesh()`.
      dtype: of the grids on device (`training_dtype`).
      chunk_images: images per loss chunk and device; default ``CHUNK_IMAGE_MODELS // K`` (at least 4),
        which bounds the temporaries of an evaluation of all K models.
    """
    mesh = data_mesh() if mesh is None else mesh
    chunk_images = max(4, CHUNK_IMAGE_MODELS // len(centerbias)) if chunk_images is None else chunk_images
    devices = mesh.shape[DATA_AXIS]
    used = sorted({int(i) for images in (*train_images, *val_images) for i in images})
    by_image = NamedSharding(mesh, P(DATA_AXIS))
    per_model = NamedSharding(mesh, P(None, DATA_AXIS))
    groups, log_cbs, trains, vals = [], [], [], []
    for members in group_by_shape(grids, used):
        chunk, size = chunking(len(members), devices, chunk_images)
        counts = np.zeros((size, *density_shape(fixations, members[0], cell)), np.float32)
        counts[: len(members)] = fixation_counts(fixations, members, counts.shape[1:], cell)
        arrays = (stack_padded(grids, members, size, dtype), counts, counts.sum(axis=(1, 2)))
        groups.append(PoolGroup(*(jax.device_put(a, by_image) for a in arrays), chunk=chunk))
        position = {i: j for j, i in enumerate(members)}
        log_cbs.append(np.stack([np.asarray(fn(counts.shape[1:]), np.float32) for fn in centerbias]))
        trains.append(jax.device_put(image_weights(train_images, position, size), per_model))
        vals.append(jax.device_put(image_weights(val_images, position, size), per_model))
    replicated = NamedSharding(mesh, P())
    models = ModelData(tuple(jax.device_put(c, replicated) for c in log_cbs), tuple(trains), tuple(vals))
    return tuple(groups), models


def density_shape(fixations: Fixations, image: int, cell: int) -> tuple[int, int]:
    """(H, W) of image ``image``'s density grid (its working size over ``cell``)."""
    height, width = (int(s) for s in fixations.image_sizes[image])
    return height // cell, width // cell


def image_weights(images: Sequence[Sequence[int]], position: dict[int, int], size: int) -> np.ndarray:
    """(K, size) float32: 1 where model k uses the group's image at that position."""
    weights = np.zeros((len(images), size), np.float32)
    for k, chosen in enumerate(images):
        rows = [position[int(i)] for i in chosen if int(i) in position]
        weights[k, rows] = 1.0
    return weights


def make_model_loss(config: ModelConfig, mesh: Mesh) -> Callable:
    """``loss(params, stats, log_cbs, train, val, groups) -> (train NLL, val NLL)``: one model's mean NLL vs
    uniform (nats/fix) over the images that the weights ``train`` and ``val`` select, from one pass over the
    grids; call it under ``vmap`` for K models. Only the training NLL is differentiable (the validation NLL
    is under ``stop_gradient``).

    The head is `model.SaliencyHead`'s readout and finalizer, with the finalizer's resize + blur matrices
    (`finalizer.finalizer_maps`) computed once per group rather than per chunk: each chunk's gradient is
    taken with respect to the matrices, and their sum over chunks is pulled back to the blur width once;
    the likelihood is taken of the logits (`likelihood.log_likelihood_of_logits`, the same maths as
    `finalizer.log_softmax_2d` and `likelihood.log_likelihood_per_image`).
    """
    readout = config.readout()

    def chunk_ll(head, stats, log_cb, train, val, grids, counts):
        saliency = readout.apply({"params": head["readout"], "stats": stats["readout"]}, grids)
        ll = log_likelihood_of_logits(finalizer_logits(head["maps"], head["alpha"], saliency, log_cb), counts)
        return jnp.sum(train * ll), jnp.sum(val * ll)

    def group_maps(finalizer, groups):
        return tuple(finalizer_maps(finalizer, g.grids.shape[1:3], g.counts.shape[1:], config.cell, config.max_sigma)
                     for g in groups)

    def group_heads(params, maps):
        alpha = params["finalizer"]["center_bias_weight"]
        return [{"readout": params["readout"], "alpha": alpha, "maps": m} for m in maps]

    def group_sum(fn, head, stats, log_cb, train, val, group):
        split = lambda x: x.reshape(-1, group.chunk, *x.shape[1:])  # noqa: E731

        def body(acc, xs):
            return jax.tree_util.tree_map(jnp.add, acc, fn(head, stats, log_cb, *xs)), None

        xs = (split(train), split(val), split(group.grids), split(group.counts))
        zero = jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(fn, head, stats, log_cb, *(x[0] for x in xs)))
        return jax.lax.scan(body, zero, xs)[0]

    def total(trees):
        return jax.tree_util.tree_map(lambda *xs: sum(xs), *trees)

    @jax.custom_vjp
    def weighted_ll(params, stats, log_cbs, trains, vals, groups):
        heads = group_heads(params, group_maps(params["finalizer"], groups))
        sums = total([group_sum(chunk_ll, head, stats, *rest) for head, *rest in zip(heads, log_cbs, trains, vals, groups)])
        return jax.lax.psum(sums, DATA_AXIS)

    def weighted_ll_fwd(params, stats, log_cbs, trains, vals, groups):
        # Differentiated as they are, the replicated params would get gradients already summed over the
        # devices (shard_map's autodiff does that for an invariant input), and `weighted_ll_bwd`'s psum would
        # sum them again: n times the gradient on n devices. As device-varying values their gradients here
        # are this device's images' alone, and the psum in `weighted_ll_bwd` adds them up once.
        params = jax.lax.pcast(params, DATA_AXIS, to="varying")
        maps, maps_vjp = jax.vjp(lambda finalizer: group_maps(finalizer, groups), params["finalizer"])
        gradient = jax.value_and_grad(chunk_ll, has_aux=True)
        sums = [group_sum(gradient, head, stats, *rest)
                for head, *rest in zip(group_heads(params, maps), log_cbs, trains, vals, groups)]
        train, val = jax.lax.psum(total([values for values, _ in sums]), DATA_AXIS)
        grads = [g for _, g in sums]
        (finalizer,) = maps_vjp(tuple(g["maps"] for g in grads))
        finalizer = {**finalizer, "center_bias_weight": finalizer["center_bias_weight"] + sum(g["alpha"] for g in grads)}
        return (train, val), {**params, "readout": total([g["readout"] for g in grads]), "finalizer": finalizer}

    def weighted_ll_bwd(grad, cotangents):
        # The params are replicated: their cotangent is the sum of the devices' gradients (`weighted_ll_fwd`).
        # The validation sum's cotangent is zero (stop_gradient in `local`).
        train_cotangent, _ = cotangents
        return (jax.tree_util.tree_map(lambda g: jax.lax.psum(train_cotangent * g, DATA_AXIS), grad),
                None, None, None, None, None)

    weighted_ll.defvjp(weighted_ll_fwd, weighted_ll_bwd)

    def local(params, stats, log_cbs, trains, vals, groups):
        train, val = weighted_ll(params, stats, log_cbs, trains, vals, groups)
        counts = [sum(jnp.sum(w * g.fixations) for w, g in zip(weights, groups)) for weights in (trains, vals)]
        counts = jax.lax.psum(counts, DATA_AXIS)
        return -train / jnp.maximum(counts[0], 1.0), -jax.lax.stop_gradient(val) / jnp.maximum(counts[1], 1.0)

    in_specs = (P(), P(), P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS))
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=(P(), P()))


@dataclasses.dataclass(frozen=True)
class BatchedSteps:
    """The functions of a K-model run (built by `make_batched_steps`).

    Attributes:
      evaluate: ``(states, models, groups) -> (K,) train, (K,) val`` NLL (nats/fix) at the current params.
      evaluate_some: ``(params, stats, models, groups, idx) -> (b,) objective, (b,) val NLL, grads`` of the
        models ``idx`` (an int array of b distinct indices) at ``params`` (all K models' params): one pass
        over the grids for b models. Compiled once per b.
      record: ``(states, train, val) -> states`` `training.record_epoch` for every model.
      epoch: ``(states, models, groups, active) -> states``: one L-BFGS iteration of every active
        model, its training and validation loss recorded; inactive models unchanged (`lbfgs_epoch`).
      begin, observe_some, finish: the other compiled pieces of `lbfgs_epoch`.
      mesh: the device mesh.
    """

    evaluate: Callable
    evaluate_some: Callable
    record: Callable
    begin: Callable
    observe_some: Callable
    finish: Callable
    mesh: Mesh

    def replicate(self, states: TrainState) -> TrainState:
        """``states`` strongly typed and replicated over the mesh (as the compiled functions return it)."""
        replicated = NamedSharding(self.mesh, P())
        return jax.tree_util.tree_map(lambda x: jax.device_put(np.asarray(x), replicated), states)

    def fresh_value_and_grad(self, states: TrainState, models: ModelData, groups):
        """``((K,) objective, (K,) val NLL), grads`` of every model at its current params."""
        value, val, grad = self.evaluate_some(states.params, states.stats, models, groups,
                                              np.arange(len(np.asarray(states.epoch))))
        return (value, val), grad

    def epoch(self, states: TrainState, models: ModelData, groups, active) -> TrainState:
        return lbfgs_epoch(self, states, models, groups, np.asarray(active, bool))


def trainable_at_once(train_config: TrainConfig) -> bool:
    """Whether ``train_config``'s optimiser can train K models at once: L-BFGS with the Wolfe line search."""
    return train_config.optimizer == "lbfgs" and train_config.line_search == "wolfe"


def check_trainable_at_once(train_config: TrainConfig) -> None:
    """Raises ``ValueError`` saying what to do unless `trainable_at_once`."""
    if not trainable_at_once(train_config):
        raise ValueError("training many readouts at once needs L-BFGS with the Wolfe line search "
                         "(optimizer='lbfgs', line_search='wolfe'); train fold by fold (--fold-by-fold) for Adam or "
                         "the zoom line search")


def make_batched_steps(config: ModelConfig, train_config: TrainConfig, mesh: Mesh | None = None) -> BatchedSteps:
    """Jitted functions training K models with L-BFGS on ``mesh`` (default: all devices)."""
    check_trainable_at_once(train_config)
    mesh = data_mesh() if mesh is None else mesh
    loss = make_model_loss(config, mesh)
    direction = optax.chain(*lbfgs_direction_links(train_config))
    penalty = functools.partial(weight_penalty, train_config)

    def objective(params, stats, model, groups):
        """(training objective, validation NLL) of one model, from one pass over the grids."""
        train, val = loss(params, stats, model.log_centerbias, model.train, model.val, groups)
        return train + penalty(params), val

    @jax.jit
    def evaluate_some(params, stats, models: ModelData, groups, idx):
        gradient = jax.value_and_grad(objective, has_aux=True)
        (value, val), grad = jax.vmap(lambda p, s, m: gradient(p, s, m, groups))(*gather((params, stats, models), idx))
        return value, val, grad

    @jax.jit
    def begin(states: TrainState, value, grad):
        """Every model's search along its L-BFGS direction, and the direction links' new states."""
        def one(state, value, grad):
            *links, wolfe = state.opt_state
            updates, links = direction.update(grad, tuple(links), state.params)
            return begin_search(updates, value, grad, wolfe.aux), links

        return jax.vmap(one)(states, value, grad)

    @jax.jit
    def observe_some(search: Search, idx, valid, value, val, grad) -> Search:
        """``search`` after the evaluation of models ``idx`` at their trial params (`valid`: whose search it was)."""
        part = gather(search, idx)
        observed = jax.vmap(observe)(part, value, val, grad)
        kept = select_models(valid, observed, part)
        return jax.tree_util.tree_map(lambda full, new: full.at[idx].set(new), search, kept)

    @jax.jit
    def finish(states: TrainState, search: Search, links, active) -> TrainState:
        def one(state, search, links):
            updates, wolfe = end_search(search)
            params = optax.apply_updates(state.params, updates)
            new = state.replace(params=params, opt_state=(*links, wolfe), epoch=state.epoch + 1)
            return record_epoch(new, wolfe.value - penalty(params), wolfe.aux)

        return select_models(active, jax.vmap(one)(states, search, links), states)

    @jax.jit
    def evaluate(states: TrainState, models: ModelData, groups):
        return jax.vmap(lambda s, m: loss(s.params, s.stats, m.log_centerbias, m.train, m.val, groups))(states, models)

    return BatchedSteps(evaluate=evaluate, evaluate_some=evaluate_some, record=jax.jit(jax.vmap(record_epoch)),
                        begin=begin, observe_some=observe_some, finish=finish, mesh=mesh)


searching_many = jax.jit(jax.vmap(searching))
trial_points = jax.jit(jax.vmap(trial_params))


def gather(tree, idx):
    """The entries ``idx`` of every leaf's leading (model) axis."""
    return jax.tree_util.tree_map(lambda x: x[idx], tree)


def select_models(mask, new, old):
    """``new`` for the models where ``mask`` (K,) holds, ``old`` for the others (leading model axis)."""
    return jax.tree_util.tree_map(lambda n, o: jnp.where(mask.reshape(-1, *(1,) * (n.ndim - 1)), n, o), new, old)


def bucket(todo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(idx, valid): the models to evaluate for the ``todo`` ones, padded to the next power of two (or K).

    Evaluating only the models that need it costs in proportion to their number; padding to one of
    a few sizes bounds the compilations (one per size). ``idx`` is distinct indices, the ``todo`` ones
    first; ``valid`` marks them.

    >>> bucket(np.array([False, True, False, True, True]))
    (array([1, 3, 4, 0]), array([ True,  True,  True, False]))
    """
    k, n = len(todo), int(todo.sum())
    idx = np.argsort(~todo, kind="stable")[:padded_size(n, k)]
    return idx, todo[idx]


def evaluated_some(steps: BatchedSteps, params, states: TrainState, models: ModelData, groups, todo: np.ndarray):
    """(idx, valid, value, val, grad) of `BatchedSteps.evaluate_some` for the ``todo`` models at ``params``."""
    idx, valid = bucket(todo)
    return (idx, valid, *steps.evaluate_some(params, states.stats, models, groups, jnp.asarray(idx)))


def start_values(steps: BatchedSteps, states: TrainState, models: ModelData, groups, active: np.ndarray):
    """(K,) objective and gradients at the current params: the ones the line search stored at the accepted
    point, computed afresh for the active models without one (before the first epoch)."""
    wolfe = states.opt_state[-1]
    value, grad = wolfe.value, wolfe.grad
    todo = active & ~np.isfinite(np.asarray(value))
    if todo.any():
        idx, valid, fresh, _, fresh_grad = evaluated_some(steps, states.params, states, models, groups, todo)
        idx, fresh, fresh_grad = idx[valid], fresh[valid], gather(fresh_grad, np.flatnonzero(valid))
        value = value.at[idx].set(fresh)
        grad = jax.tree_util.tree_map(lambda g, f: g.at[idx].set(f), grad, fresh_grad)
    return value, grad


def lbfgs_epoch(steps: BatchedSteps, states: TrainState, models: ModelData, groups, active: np.ndarray) -> TrainState:
    """One L-BFGS iteration of every active model (`linesearch`'s strong-Wolfe search along its direction).

    The searches advance together, one evaluation per round; each round evaluates only the models whose
    search goes on (`bucket`), so a model whose search takes many trial steps costs about 1/K of an
    evaluation of all K per step, and a stopped model costs nothing.
    """
    value, grad = start_values(steps, states, models, groups, active)
    search, links = steps.begin(states, value, grad)
    while (todo := active & np.asarray(searching_many(search))).any():
        points = trial_points(states.params, search)
        idx, valid, value, val, grad = evaluated_some(steps, points, states, models, groups, todo)
        search = steps.observe_some(search, jnp.asarray(idx), jnp.asarray(valid), value, val, grad)
    return steps.finish(states, search, links, jnp.asarray(active))


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """K single-model states -> one state with a leading model axis."""
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *states)


def unstack_state(states: TrainState, k: int) -> TrainState:
    """Model ``k``'s state out of a stacked one."""
    return jax.tree_util.tree_map(lambda x: x[k], states)


def active_models(states: TrainState, train_config: TrainConfig) -> np.ndarray:
    """(K,) bool: the models whose stopping rule has not fired and whose line search has not failed
    (`training.line_search_failed`)."""
    val, epochs = np.asarray(states.val_loss), np.asarray(states.epoch)
    rule = np.asarray([should_stop(val[k], int(epochs[k]), train_config) for k in range(len(epochs))])
    return ~rule & ~line_search_failed(states)


def fit_many(
    states: TrainState,
    groups: tuple[PoolGroup, ...],
    models: ModelData,
    steps: BatchedSteps,
    train_config: TrainConfig,
    manager: ocp.CheckpointManager | None = None,
    stop_at: int | None = None,
    log: Callable[[str], None] = logger.info,
    names: Sequence[str] | None = None,
) -> TrainState:
    """Trains the K models of ``states`` until each one's stopping rule fires (or epoch ``stop_at``).

    Checkpoints every epoch (written while the next epoch runs, all on disk when it returns); at epoch 0 the
    initial params are first evaluated. Returns the final states; their ``best_params`` are the ones to use.
    """
    states = steps.replicate(states)
    names = [f"model {k}" for k in range(len(np.asarray(states.epoch)))] if names is None else names
    if int(np.max(np.asarray(states.epoch))) == 0 and np.isnan(np.asarray(states.val_loss)[:, 0]).all():
        states = steps.record(states, *steps.evaluate(states, models, groups))
        if manager is not None:
            save_checkpoint(manager, states)
    limit = train_config.max_epochs if stop_at is None else min(stop_at, train_config.max_epochs)
    active = active_models(states, train_config)
    while active.any() and int(np.max(np.asarray(states.epoch))) < limit:
        states = steps.epoch(states, models, groups, jnp.asarray(active))
        if manager is not None:
            save_checkpoint(manager, states)
        log_epoch(states, active, log)
        was_active, active = active, active_models(states, train_config)
        failed = line_search_failed(states)
        for k in np.flatnonzero(was_active & ~active):
            why = ", its line search found no decrease" if failed[k] else ""
            log(f"{names[k]}: stopped after {int(states.epoch[k])} epochs{why} (best epoch {int(states.best_epoch[k])})")
    finish_saving(manager)
    return states


def log_epoch(states: TrainState, active: np.ndarray, log: Callable[[str], None]) -> None:
    """One line per epoch: the mean training and validation NLL of the models that ran it."""
    epoch = int(np.max(np.asarray(states.epoch)))
    train = np.asarray(states.train_loss)[active, epoch]
    val = np.asarray(states.val_loss)[active, epoch]
    evaluations = np.asarray(optax.tree_utils.tree_get(states.opt_state, "num_linesearch_steps"))[active]
    log(f"epoch {epoch}: {int(active.sum())} models training, mean train NLL {train.mean():.5f} nats/fix, "
        f"mean val NLL {val.mean():.5f} nats/fix, line search {evaluations.min()}-{evaluations.max()} evaluations")
