import jax
import jax.numpy as jnp
import pytest

from deepgaze_jax import checkpoints as C
from deepgaze_jax import training as T
from synthetic import CONFIG, training_data


@pytest.fixture(scope="module")
def data():
    return training_data()


def _corrupt(step_dir):
    files = sorted(p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size > 0)
    for p in files:  # truncate every data file of the step
        with open(p, "r+b") as f:
            f.truncate(p.stat().st_size // 2)


def test_corrupt_checkpoint_falls_back_then_fails_clearly(tmp_path, data):
    *_, stats, train, val = data
    cfg = T.TrainConfig(max_epochs=3)
    steps = T.make_steps(CONFIG, cfg)
    manager = C.checkpoint_manager(tmp_path / "ckpt", max_to_keep=2)
    T.fit(T.create_train_state(CONFIG, cfg, stats), train, val, steps, cfg, manager=manager, log=lambda _: None)
    assert manager.all_steps() == [2, 3]
    template = T.create_train_state(CONFIG, cfg, stats)
    _corrupt(tmp_path / "ckpt" / "3")
    restored = C.restore_checkpoint(manager, template)
    assert int(restored.epoch) == 2
    _corrupt(tmp_path / "ckpt" / "2")
    with pytest.raises(C.CheckpointError, match="no usable checkpoint"):
        C.restore_checkpoint(manager, template)


def test_digest_detects_changed_values(data):
    *_, stats, _, _ = data
    state = T.create_train_state(CONFIG, T.TrainConfig(), stats)
    changed = state.replace(params=jax.tree_util.tree_map(lambda x: x + 1e-7 * jnp.ones_like(x), state.params))
    assert C.tree_digest(state) == C.tree_digest(state.replace())
    assert C.tree_digest(state) != C.tree_digest(changed)


def test_no_checkpoint_restores_none(tmp_path, data):
    *_, stats, _, _ = data
    manager = C.checkpoint_manager(tmp_path / "empty")
    assert C.restore_checkpoint(manager, T.create_train_state(CONFIG, T.TrainConfig(), stats)) is None


def test_a_corrupt_latest_step_is_quarantined_so_the_run_can_go_on(tmp_path, data, caplog):
    """Old code: the fallback to step 2 worked, but saving step 3 again raised StepAlreadyExistsError."""
    *_, stats, train, val = data
    cfg = T.TrainConfig(max_epochs=3)
    steps = T.make_steps(CONFIG, cfg)
    quiet = dict(log=lambda _: None)
    manager = C.checkpoint_manager(tmp_path / "ckpt", max_to_keep=2)
    T.fit(T.create_train_state(CONFIG, cfg, stats), train, val, steps, cfg, manager=manager, **quiet)
    _corrupt(tmp_path / "ckpt" / "3")
    for _ in range(2):  # every rerun goes on
        manager = C.checkpoint_manager(tmp_path / "ckpt", max_to_keep=2)
        with caplog.at_level("WARNING", logger="deepgaze_jax.checkpoints"):
            restored = C.restore_checkpoint(manager, T.create_train_state(CONFIG, cfg, stats))
        finished = T.fit(restored, train, val, steps, cfg, manager=manager, **quiet)
        assert int(finished.epoch) == 3 and manager.all_steps() == [2, 3]
        manager.close()
    quarantined = list((tmp_path / "ckpt.quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.startswith("3-")
    assert any("moved it to" in r.getMessage() and "ckpt.quarantine" in r.getMessage() for r in caplog.records)


def test_resume_restores_the_latest_step_and_says_so_or_keeps_a_fresh_state(tmp_path, data):
    *_, stats, train, val = data
    cfg = T.TrainConfig(max_epochs=2)
    fresh, lines = T.create_train_state(CONFIG, cfg, stats), []
    manager = C.checkpoint_manager(tmp_path / "ckpt")
    assert C.resume(manager, fresh, "run", lines.append) is fresh and lines == []
    trained = T.fit(fresh, train, val, T.make_steps(CONFIG, cfg), cfg, manager=manager, log=lambda _: None)
    manager.wait_until_finished()
    restored = C.resume(manager, T.create_train_state(CONFIG, cfg, stats), "run", lines.append)
    assert int(restored.epoch) == int(trained.epoch) == 2 and lines == ["run: resuming from epoch 2"]
    for a, b in zip(jax.tree_util.tree_leaves(restored.params), jax.tree_util.tree_leaves(trained.params)):
        assert jnp.array_equal(a, b)
    manager.close()
