import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepgaze_jax import training as T
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.finalizer import expand_to_pixels
from deepgaze_jax.model import SaliencyHead
from synthetic import CONFIG, make_data

TRAIN = list(range(8))
VAL = list(range(8, 12))


@pytest.fixture(scope="module")
def data():
    grids, log_cbs, fixations = make_data()
    stats = T.feature_stats(grids, TRAIN)
    train = T.make_groups(grids, log_cbs, fixations, TRAIN, CONFIG.cell)
    val = T.make_groups(grids, log_cbs, fixations, VAL, CONFIG.cell)
    return grids, log_cbs, fixations, stats, train, val


def test_fixation_counts_bins_working_pixels_into_cells():
    fixations, _ = Fixations.create([0.0, 3.99, 4.0, 63.9, 10.0], [0.0, 0.0, 7.5, 47.9, 5.0], [0, 0, 0, 0, 1], [(48, 64), (48, 64)])
    counts = T.fixation_counts(fixations, [1, 0], (12, 16), 4)
    assert counts.shape == (2, 12, 16)
    assert counts[1, 0, 0] == 2 and counts[1, 1, 1] == 1 and counts[1, 11, 15] == 1
    assert counts[0, 1, 2] == 1 and counts.sum() == 5


def test_feature_stats_match_numpy(data):
    grids, *_ , stats, _, _ = data
    stacked = np.concatenate([np.asarray(grids[i], np.float64).reshape(-1, 6) for i in TRAIN])
    np.testing.assert_allclose(stats["readout"]["mean"], stacked.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["readout"]["std"], stacked.std(0), rtol=1e-5)


def test_loss_is_mean_nll_vs_uniform_per_fixation(data):
    """The loss equals -mean over fixations of log p_pixel + log(h w), from the pixel-level density."""
    grids, log_cbs, fixations, stats, train, _ = data
    state = T.create_train_state(CONFIG, T.TrainConfig(), stats)
    loss = T.make_steps(CONFIG, T.TrainConfig()).loss(state.params, state.stats, train)
    lls = []
    for i in TRAIN:
        log_p = SaliencyHead(CONFIG).apply(
            state.head_variables(), jnp.asarray(grids[i], jnp.float32)[None], jnp.asarray(log_cbs[i])[None]
        )
        pixels = np.asarray(expand_to_pixels(log_p, CONFIG.cell))[0]
        on = fixations.n == i
        rows, cols = np.floor(fixations.y[on]).astype(int), np.floor(fixations.x[on]).astype(int)
        lls.append(pixels[rows, cols] + math.log(pixels.size))
    np.testing.assert_allclose(float(loss), -np.concatenate(lls).mean(), rtol=1e-5)


def test_uniform_head_has_zero_loss(data):
    *_, stats, train, _ = data
    state = T.create_train_state(CONFIG, T.TrainConfig(), stats)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    assert abs(float(T.make_steps(CONFIG, T.TrainConfig()).loss(zeros, stats, train))) < 1e-5


def test_padding_images_do_not_change_the_loss(data):
    grids, log_cbs, fixations, stats, train, _ = data
    steps = T.make_steps(CONFIG, T.TrainConfig())
    state = T.create_train_state(CONFIG, T.TrainConfig(), stats)
    padded = tuple(
        T.ShapeGroup(
            *(jnp.concatenate([a, jnp.ones_like(a[:3])]) for a in (g.grids, g.log_centerbias)),
            *(jnp.concatenate([a, jnp.zeros_like(a[:3])]) for a in (g.counts, g.valid)),
        )
        for g in train
    )
    np.testing.assert_allclose(steps.loss(state.params, stats, padded), steps.loss(state.params, stats, train), rtol=1e-6)


@pytest.mark.parametrize(
    "history, epoch, stop",
    [
        ([5.0 - 0.1 * e for e in range(30)], 25, False),  # still improving
        ([1.0] * 21 + [2.0] * 9, 25, True),  # epochs 23..25 worse than 18..20
        ([1.0] * 21 + [2.0] * 9, 27, False),  # epochs 25..27 no worse than 20..22 (epochs 21, 22 are 2.0)
        ([1.0 + 0.01 * e for e in range(30)], 19, False),  # worse every epoch, but fewer than min_epochs
        ([1.0 + 0.01 * e for e in range(30)], 20, True),
        ([1.0] * 30, 25, False),  # equal is not worse
    ],
)
def test_stopping_rule(history, epoch, stop):
    val = np.full(801, np.nan)
    val[: len(history)] = history
    assert T.should_stop(val, epoch, T.TrainConfig()) == stop


def test_stopping_rule_needs_all_three_epochs_worse():
    val = np.full(801, np.nan)
    val[:30] = 1.0
    val[23:26] = [2.0, 0.5, 2.0]
    assert not T.should_stop(val, 25, T.TrainConfig())
    val[24] = 2.0
    assert T.should_stop(val, 25, T.TrainConfig())
    assert T.should_stop(val, 800, T.TrainConfig())


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_fit_learns_and_keeps_best_params(data, optimizer):
    *_, stats, train, val = data
    cfg = T.TrainConfig(optimizer=optimizer, max_epochs=30, learning_rate=0.05, batch_size=4)
    steps = T.make_steps(CONFIG, cfg)
    state = T.fit(T.create_train_state(CONFIG, cfg, stats), train, val, steps, cfg, log=lambda _: None)
    losses = np.asarray(state.val_loss)
    epoch = int(state.epoch)
    assert np.isfinite(losses[: epoch + 1]).all() and np.isnan(losses[epoch + 1 :]).all()
    assert int(state.best_epoch) == int(np.argmin(losses[: epoch + 1]))
    assert losses[int(state.best_epoch)] < losses[0] - 0.1  # fixations follow channel 0: > 0.1 nats/fix learnt
    best_val = float(steps.loss(state.best_params, stats, val))
    np.testing.assert_allclose(best_val, losses[int(state.best_epoch)], rtol=1e-6)
    # the recorded training loss is the NLL without the weight-decay penalty
    np.testing.assert_allclose(state.train_loss[epoch], steps.loss(state.params, stats, train), rtol=1e-4)


def test_weight_decay_penalises_only_readout_kernels(data):
    *_, stats, _, _ = data
    params = T.create_train_state(CONFIG, T.TrainConfig(), stats).params
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    kernels = sum(x.size for p, x in jax.tree_util.tree_leaves_with_path(params) if p[-1].key == "kernel")
    assert float(T.l2_norm_squared(ones)) == kernels == 6 * 4 + 4 * 1


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_resume_is_bit_exact(tmp_path, data, optimizer):
    """Stopping after 4 epochs and resuming to 9 gives exactly the state of a straight run to 9."""
    *_, stats, train, val = data
    cfg = T.TrainConfig(optimizer=optimizer, max_epochs=9, learning_rate=0.05, batch_size=4, seed=3)
    steps = T.make_steps(CONFIG, cfg)
    quiet = dict(log=lambda _: None)
    straight = T.fit(T.create_train_state(CONFIG, cfg, stats), train, val, steps, cfg, **quiet)

    manager = T.checkpoint_manager(tmp_path / "ckpt")
    T.fit(T.create_train_state(CONFIG, cfg, stats), train, val, steps, cfg, manager=manager, stop_at=4, **quiet)
    manager.close()
    manager = T.checkpoint_manager(tmp_path / "ckpt")  # a new process would build a fresh template
    restored = T.restore_checkpoint(manager, T.create_train_state(CONFIG, cfg, stats, key=jax.random.PRNGKey(99)))
    assert int(restored.epoch) == 4
    resumed = T.fit(restored, train, val, steps, cfg, manager=manager, **quiet)
    assert int(resumed.epoch) == int(straight.epoch) == 9
    assert jax.tree_util.tree_structure(resumed) == jax.tree_util.tree_structure(straight)
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(straight)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _corrupt(step_dir):
    files = sorted(p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size > 0)
    for p in files:  # truncate every data file of the step
        with open(p, "r+b") as f:
            f.truncate(p.stat().st_size // 2)


def test_corrupt_checkpoint_falls_back_then_fails_clearly(tmp_path, data):
    *_, stats, train, val = data
    cfg = T.TrainConfig(max_epochs=3)
    steps = T.make_steps(CONFIG, cfg)
    manager = T.checkpoint_manager(tmp_path / "ckpt", max_to_keep=2)
    T.fit(T.create_train_state(CONFIG, cfg, stats), train, val, steps, cfg, manager=manager, log=lambda _: None)
    assert manager.all_steps() == [2, 3]
    template = T.create_train_state(CONFIG, cfg, stats)
    _corrupt(tmp_path / "ckpt" / "3")
    restored = T.restore_checkpoint(manager, template)
    assert int(restored.epoch) == 2
    _corrupt(tmp_path / "ckpt" / "2")
    with pytest.raises(T.CheckpointError, match="no usable checkpoint"):
        T.restore_checkpoint(manager, template)


def test_digest_detects_changed_values(data):
    *_, stats, _, _ = data
    state = T.create_train_state(CONFIG, T.TrainConfig(), stats)
    changed = state.replace(params=jax.tree_util.tree_map(lambda x: x + 1e-7 * jnp.ones_like(x), state.params))
    assert T.tree_digest(state) == T.tree_digest(state.replace())
    assert T.tree_digest(state) != T.tree_digest(changed)


def test_no_checkpoint_restores_none(tmp_path, data):
    *_, stats, _, _ = data
    manager = T.checkpoint_manager(tmp_path / "empty")
    assert T.restore_checkpoint(manager, T.create_train_state(CONFIG, T.TrainConfig(), stats)) is None


def test_bad_optimizer_name():
    with pytest.raises(ValueError, match="lbfgs"):
        T.TrainConfig(optimizer="sgd")
