import jax
import numpy as np
import pytest

from deepgaze_jax import checkpoints as C
from deepgaze_jax import training as T
from synthetic import CONFIG, training_data


@pytest.fixture(scope="module")
def data():
    return training_data()


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


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_resume_is_bit_exact(tmp_path, data, optimizer):
    """Stopping after 4 epochs and resuming to 9 gives exactly the state of a straight run to 9."""
    *_, stats, train, val = data
    cfg = T.TrainConfig(optimizer=optimizer, max_epochs=9, learning_rate=0.05, batch_size=4, seed=3)
    steps = T.make_steps(CONFIG, cfg)
    quiet = dict(log=lambda _: None)
    straight = T.fit(T.create_train_state(CONFIG, cfg, stats), train, val, steps, cfg, **quiet)

    manager = C.checkpoint_manager(tmp_path / "ckpt")
    T.fit(T.create_train_state(CONFIG, cfg, stats), train, val, steps, cfg, manager=manager, stop_at=4, **quiet)
    manager.close()
    manager = C.checkpoint_manager(tmp_path / "ckpt")  # a new process would build a fresh template
    restored = C.restore_checkpoint(manager, T.create_train_state(CONFIG, cfg, stats, key=jax.random.PRNGKey(99)))
    assert int(restored.epoch) == 4
    resumed = T.fit(restored, train, val, steps, cfg, manager=manager, **quiet)
    assert int(resumed.epoch) == int(straight.epoch) == 9
    assert jax.tree_util.tree_structure(resumed) == jax.tree_util.tree_structure(straight)
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(straight)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_optimizer_name():
    with pytest.raises(ValueError, match="lbfgs"):
        T.TrainConfig(optimizer="sgd")


def with_nan_bias(state):
    """``state`` with one readout bias NaN: every loss is NaN, so no line search can find a decrease."""
    params = jax.tree_util.tree_map(lambda x: x, state.params)
    params["readout"]["layer0"]["bias"] = params["readout"]["layer0"]["bias"].at[0].set(np.nan)
    return state.replace(params=params)


def test_a_model_whose_line_search_finds_no_decrease_stops_instead_of_running_to_max_epochs(data):
    *_, stats, train, val = data
    cfg = T.TrainConfig(max_epochs=50)
    steps = T.make_steps(CONFIG, cfg)
    lines = []
    state = T.fit(with_nan_bias(T.create_train_state(CONFIG, cfg, stats)), train, val, steps, cfg, log=lines.append)
    assert int(state.epoch) == 1 and bool(T.line_search_failed(state))
    assert "line search found no decrease" in lines[-1]
    assert not T.line_search_failed(T.create_train_state(CONFIG, cfg, stats))
    assert not T.line_search_failed(T.create_train_state(CONFIG, T.TrainConfig(optimizer="adam"), stats))
