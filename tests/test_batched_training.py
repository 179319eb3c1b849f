import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reference_readout import iie_reference

from deepgaze_jax import batched_training as B
from deepgaze_jax import checkpoints as C
from deepgaze_jax import input_pipeline as I
from deepgaze_jax import training as T
from deepgaze_jax.finalizer import Finalizer
from deepgaze_jax.likelihood import fixation_counts, log_likelihood_per_image
from deepgaze_jax.model import SaliencyHead, centerbias_on_grid
from synthetic import CONFIG, make_data

FOLDS = np.arange(12) % 3
CFG = T.TrainConfig(max_epochs=25, min_epochs=5)


@pytest.fixture(scope="module")
def setup():
    """Three fold-models on 12 synthetic images, each with its own split, statistics and centre bias."""
    grids, _, fixations = make_data(num_images=12)
    r, c = np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 16), indexing="ij")
    templates = [-(r**2 + c**2) * (1 + k) for k in range(3)]
    trains = [np.flatnonzero(FOLDS != k) for k in range(3)]
    vals = [np.flatnonzero(FOLDS == k) for k in range(3)]
    sums = I.feature_sums(grids)
    states = [T.create_train_state(CONFIG, CFG, I.stats_from_sums(sums, t), key=jax.random.PRNGKey(k))
              for k, t in enumerate(trains)]
    return grids, fixations, templates, trains, vals, states


def pool(setup, dtype=np.float32):
    grids, fixations, templates, trains, vals, _ = setup
    centerbias = [functools.partial(centerbias_on_grid, t) for t in templates]
    return B.make_pool(grids, fixations, centerbias, trains, vals, CONFIG.cell, dtype=dtype, chunk_images=2)


def fit_batched(setup, dtype=np.float32, config=CFG, **kwargs):
    groups, models = pool(setup, dtype)
    steps = B.make_batched_steps(CONFIG, config)
    return B.fit_many(B.stack_states(setup[-1]), groups, models, steps, config, log=lambda _: None, **kwargs)


@pytest.fixture(scope="module")
def batched(setup):
    return jax.tree_util.tree_map(np.asarray, fit_batched(setup))


def fold_groups(setup, k, dtype=np.float32):
    grids, fixations, templates, trains, vals, _ = setup
    log_cbs = [np.asarray(centerbias_on_grid(templates[k], (h // CONFIG.cell, w // CONFIG.cell)))
               for h, w in fixations.image_sizes]
    return (I.make_groups(grids, log_cbs, fixations, trains[k], CONFIG.cell, dtype=dtype),
            I.make_groups(grids, log_cbs, fixations, vals[k], CONFIG.cell, dtype=dtype))


def test_three_models_at_once_equal_three_fold_by_fold_runs(setup, batched):
    """Same folds, seeds and stopping: the histories agree to float32 rounding, whatever epoch each stops at."""
    steps = T.make_steps(CONFIG, CFG)
    for k in range(3):
        train, val = fold_groups(setup, k)
        alone = T.fit(setup[-1][k], train, val, steps, CFG, log=lambda _: None)
        n = int(alone.epoch)
        assert int(batched.epoch[k]) == n and int(batched.best_epoch[k]) == int(alone.best_epoch)
        np.testing.assert_allclose(batched.val_loss[k, : n + 1], alone.val_loss[: n + 1], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batched.train_loss[k, : n + 1], alone.train_loss[: n + 1], rtol=1e-5, atol=1e-5)
        assert np.isnan(batched.val_loss[k, n + 1 :]).all()
        for a, b in zip(jax.tree_util.tree_leaves(B.unstack_state(batched, k).best_params),
                        jax.tree_util.tree_leaves(alone.best_params)):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_each_model_stops_by_its_own_rule(batched):
    for k in range(3):
        epochs = int(batched.epoch[k])
        assert T.should_stop(batched.val_loss[k], epochs, CFG)
        assert not any(T.should_stop(batched.val_loss[k], e, CFG) for e in range(epochs))
        assert int(batched.best_epoch[k]) == int(np.nanargmin(batched.val_loss[k]))


def test_an_inactive_model_is_frozen(setup):
    groups, models = pool(setup)
    steps = B.make_batched_steps(CONFIG, CFG)
    states = steps.replicate(B.stack_states(setup[-1]))
    states = steps.record(states, *steps.evaluate(states, models, groups))
    after = steps.epoch(states, models, groups, np.asarray([True, False, True]))
    for a, b in zip(jax.tree_util.tree_leaves(B.unstack_state(after, 1)), jax.tree_util.tree_leaves(B.unstack_state(states, 1))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [int(e) for e in after.epoch] == [1, 0, 1]


def test_resume_is_bit_exact(tmp_path, setup, batched):
    manager = C.checkpoint_manager(tmp_path / "ckpt")
    fit_batched(setup, manager=manager, stop_at=4)
    manager.close()
    manager = C.checkpoint_manager(tmp_path / "ckpt")
    template = B.stack_states([T.create_train_state(CONFIG, CFG, s.stats, key=jax.random.PRNGKey(9)) for s in setup[-1]])
    restored = C.restore_checkpoint(manager, template)
    assert [int(e) for e in restored.epoch] == [4, 4, 4]
    groups, models = pool(setup)
    resumed = B.fit_many(restored, groups, models, B.make_batched_steps(CONFIG, CFG), CFG, manager=manager,
                         log=lambda _: None)
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(batched)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def crossvalidated_ll_bits(setup, state):
    """Held-out LL vs uniform (bits/fix) over all images, each scored in float32 by the best params of the
    model that did not train on it (as the crossvalidation reports it)."""
    total = count = 0.0
    for k in range(3):
        for group in fold_groups(setup, k)[1]:
            variables = B.unstack_state(state, k).head_variables()
            log_p = np.asarray(SaliencyHead(CONFIG).apply(variables, group.grids, group.log_centerbias))
            total += float(np.sum(np.asarray(group.counts) * (log_p + math.log(np.prod(log_p.shape[1:])))))
            count += float(np.sum(group.counts))
    return total / count / math.log(2)


def test_bfloat16_training_stays_within_2_millibits_of_float32(setup):
    """The same 6 epochs in both dtypes. On these 12 tiny images the two L-BFGS trajectories part
    after about 7 epochs (0.003 bits apart at epoch 10), and the stopping rule's discrete choice of
    epoch would compare models of different training lengths; 6 epochs measure what the dtype does
    to the model before the optimiser's path amplifies it."""
    fixed = dataclasses.replace(CFG, min_epochs=6, max_epochs=6)
    f32, bf16 = (jax.tree_util.tree_map(np.asarray, fit_batched(setup, dtype=d, config=fixed))
                 for d in (np.float32, np.dtype("bfloat16")))
    assert int(f32.epoch.min()) == int(bf16.epoch.min()) == 6
    assert abs(crossvalidated_ll_bits(setup, bf16) - crossvalidated_ll_bits(setup, f32)) < 0.002


def test_training_dtype_is_float32_on_a_cpu():
    assert B.training_dtype(jax.devices("cpu")[0]) == np.float32


def test_auto_dtype_is_the_setting_where_set_else_the_hardware_rule(monkeypatch):
    monkeypatch.setattr(B, "training_dtype", lambda: np.dtype("bfloat16"))  # as on a GPU
    monkeypatch.setenv("DEEPGAZE_JAX_TRAINING_DTYPE", "float32")
    assert B.resolve_dtype() == (np.float32, "$DEEPGAZE_JAX_TRAINING_DTYPE")
    assert B.resolve_dtype(np.dtype("bfloat16")) == (np.dtype("bfloat16"), "as asked")
    monkeypatch.setenv("DEEPGAZE_JAX_TRAINING_DTYPE", "auto")
    assert B.resolve_dtype() == (np.dtype("bfloat16"), "auto: cpu")
    monkeypatch.delenv("DEEPGAZE_JAX_TRAINING_DTYPE")
    assert B.resolve_dtype()[0] == np.dtype("bfloat16")
    monkeypatch.setenv("DEEPGAZE_JAX_TRAINING_DTYPE", "float16")
    with pytest.raises(ValueError, match=r"\$DEEPGAZE_JAX_TRAINING_DTYPE must be one of auto, float32, bfloat16"):
        B.resolve_dtype()


def test_chunking_covers_every_image_in_equal_chunks():
    for images, devices in ((1, 1), (63, 1), (65, 1), (770, 2), (233, 4)):
        chunk, padded = B.chunking(images, devices, 64)
        assert padded >= images and padded % (devices * chunk) == 0 and chunk <= 64
        assert padded - images < devices * (padded // (devices * chunk) + 1)  # < one image per chunk and device


def test_adam_is_refused():
    with pytest.raises(ValueError, match="fold by fold"):
        B.make_batched_steps(CONFIG, T.TrainConfig(optimizer="adam"))


@functools.partial(jax.jit, static_argnums=0)
def _reference_ll(config, variables, grid, counts, log_cb):
    """(sum of LL vs uniform in nats, fixations) of one image: `reference_readout.iie_reference` and the finalizer."""
    finalizer = Finalizer(cell=config.cell, init_sigma=config.init_sigma, max_sigma=config.max_sigma)
    saliency = iie_reference({"params": variables["params"]["readout"], "stats": variables["stats"]["readout"]}, grid)
    log_density = finalizer.apply({"params": variables["params"]["finalizer"]}, saliency, log_cb)
    return jnp.sum(log_likelihood_per_image(log_density, counts)), jnp.sum(counts)


def _reference_nll(config, variables, grids, fixations, template, images):
    """Mean NLL vs uniform (nats/fix) of ``images`` image by image (`_reference_ll`, compiled once per grid shape):
    no pooling, chunking, vmap or custom gradient."""
    total, fixations_total = 0.0, 0.0
    for i in images:
        shape = B.density_shape(fixations, i, config.cell)
        counts = jnp.asarray(fixation_counts(fixations, [i], shape, config.cell))
        log_cb = jnp.asarray(centerbias_on_grid(template, shape))[None]
        ll, n = _reference_ll(config, variables, jnp.asarray(grids[i], jnp.float32)[None], counts, log_cb)
        total, fixations_total = total + ll, fixations_total + n
    return -total / fixations_total


def test_iie_readout_trains_batched_as_the_reference_computes_it(setup):
    """K = 3 IIE models under vmap over one shared pool: each model's training and validation NLL and its
    training gradient equal the image-by-image reference's to float32 rounding."""
    grids, fixations, templates, trains, vals, _ = setup
    config = dataclasses.replace(CONFIG, readout_features=(8, 16, 1), readout_kind="iie")
    sums = I.feature_sums(grids)
    states = [T.create_train_state(config, CFG, I.stats_from_sums(sums, t), key=jax.random.PRNGKey(10 + k))
              for k, t in enumerate(trains)]
    groups, models = pool(setup)
    train_nll, val_nll = B.make_batched_steps(config, CFG).evaluate(B.stack_states(states), models, groups)
    for k, state in enumerate(states):
        variables = {"params": state.params, "stats": state.stats}
        for got, images in ((train_nll[k], trains[k]), (val_nll[k], vals[k])):
            expected = _reference_nll(config, variables, grids, fixations, templates[k], images)
            np.testing.assert_allclose(float(got), float(expected), rtol=1e-5)
    loss = B.make_model_loss(config, I.data_mesh())
    model = jax.tree_util.tree_map(lambda x: x[0], models)
    got = jax.jit(jax.grad(lambda p: loss(p, states[0].stats, model.log_centerbias, model.train, model.val, groups)[0]))(
        states[0].params)  # jitted: run eagerly, the shard-mapped loss compiled each of its ~1000 ops alone (40 s)
    expected = jax.grad(lambda p: _reference_nll(config, {"params": p, "stats": states[0].stats}, grids, fixations,
                                                 templates[0], trains[0]))(states[0].params)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_a_round_evaluates_only_the_models_still_searching(setup):
    """Stopped models are never evaluated, and after the first round only the searches that go on are."""
    groups, models = pool(setup)
    steps = B.make_batched_steps(CONFIG, CFG)
    evaluated = []

    def counting(params, stats, models, groups, idx):
        evaluated.append(np.asarray(idx))
        return steps.evaluate_some(params, stats, models, groups, idx)

    counted = dataclasses.replace(steps, evaluate_some=counting)
    states = steps.replicate(B.stack_states(setup[-1]))
    states = steps.record(states, *steps.evaluate(states, models, groups))
    active = np.asarray([True, False, True])
    for _ in range(3):
        evaluated.clear()
        after = counted.epoch(states, models, groups, active)
        rounds = np.asarray(optax.tree_utils.tree_get(after.opt_state, "num_linesearch_steps"))
        assert all(1 not in idx for idx in evaluated)
        fresh = 1 if int(np.asarray(states.epoch)[0]) == 0 else 0  # the first epoch evaluates the start afresh
        assert len(evaluated) == fresh + rounds[active].max()
        for r, idx in enumerate(evaluated[fresh:]):
            assert sorted(idx) == [k for k in (0, 2) if rounds[k] > r]  # K = 3: no padding for 1 or 2
        states = after


def test_bucket_pads_to_a_power_of_two_with_distinct_models():
    for k in (1, 3, 10, 30):
        for n in range(1, k + 1):
            todo = np.zeros(k, bool)
            todo[np.random.default_rng(n).choice(k, n, replace=False)] = True
            idx, valid = B.bucket(todo)
            assert len(set(idx)) == len(idx) == min(k, 1 << (n - 1).bit_length())
            assert valid.sum() == n and todo[idx].tolist() == valid.tolist() and valid[:n].all()


def test_a_model_whose_line_search_finds_no_decrease_stops_and_the_others_go_on(setup, batched):
    from test_training import with_nan_bias

    states = list(setup[-1])
    states[1] = with_nan_bias(states[1])
    lines = []
    groups, models = pool(setup)
    after = B.fit_many(B.stack_states(states), groups, models, B.make_batched_steps(CONFIG, CFG), CFG, log=lines.append)
    assert [int(e) for e in after.epoch] == [int(batched.epoch[0]), 1, int(batched.epoch[2])]
    assert any("model 1: stopped after 1 epochs, its line search found no decrease" in line for line in lines)
    np.testing.assert_allclose(np.asarray(after.val_loss)[[0, 2]], batched.val_loss[[0, 2]], rtol=1e-5, atol=1e-5)
