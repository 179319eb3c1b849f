"""Training on 4 (forced host) devices gives the single-device loss, gradient and steps, fold by fold and
for many readouts at once (`batched_training`, the crossvalidation's default).

Runs in a subprocess: ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set
before JAX initialises its backend.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from deepgaze_jax import training as T
    from deepgaze_jax import input_pipeline as I
    from deepgaze_jax.model import SaliencyHead
    from synthetic import CONFIG, make_data

    assert jax.device_count() == 4, jax.devices()
    grids, log_cbs, fixations = make_data(num_images=11)  # 11 images: groups of 8 + 3, padded to 4 devices
    train, val = list(range(9)), [9, 10]
    stats = I.feature_stats(grids, train)
    meshes = {n: I.data_mesh(jax.devices()[:n]) for n in (1, 4)}
    groups = {n: I.make_groups(grids, log_cbs, fixations, train, CONFIG.cell, mesh=m) for n, m in meshes.items()}
    vals = {n: I.make_groups(grids, log_cbs, fixations, val, CONFIG.cell, mesh=m) for n, m in meshes.items()}
    assert all(len(g.grids.sharding.device_set) == 4 and g.num_images % 4 == 0 for g in groups[4])

    results = {}
    for optimizer in ("lbfgs", "adam"):
        cfg = T.TrainConfig(optimizer=optimizer, max_epochs=3, batch_size=4, learning_rate=0.05)
        state0 = T.create_train_state(CONFIG, cfg, stats)
        for n, mesh in meshes.items():
            steps = T.make_steps(CONFIG, cfg, mesh)
            value, grad = jax.value_and_grad(steps.loss)(state0.params, stats, groups[n])
            # through `fit` both times (a state it replicated compiles the epoch once per mesh, not twice)
            one_epoch = T.fit(state0, groups[n], vals[n], steps, cfg, stop_at=1, log=lambda _: None)
            final = T.fit(state0, groups[n], vals[n], steps, cfg, log=lambda _: None)
            results[optimizer, n] = (value, grad, one_epoch, final)

    for optimizer in ("lbfgs", "adam"):
        (v1, g1, e1, s1), (v4, g4, e4, s4) = results[optimizer, 1], results[optimizer, 4]
        np.testing.assert_allclose(v4, v1, rtol=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(g4), jax.tree_util.tree_leaves(g1)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # not 4x: grads are not psum-ed twice
        # the predictions after one epoch agree (not the raw params: the last layer's bias, and the
        # centre-bias weight on uniform centre biases, do not change the density and have ~0 gradients)
        group = vals[1][0]
        host = lambda tree: jax.tree_util.tree_map(np.asarray, tree)
        predict = lambda s: SaliencyHead(CONFIG).apply(
            host(s.head_variables(best=False)), np.asarray(group.grids), np.asarray(group.log_centerbias)
        )
        np.testing.assert_allclose(predict(e4), predict(e1), rtol=1e-4, atol=1e-4)
        # later epochs agree in loss (float32 sums in another order, amplified by the line search)
        np.testing.assert_allclose(s4.val_loss[:4], s1.val_loss[:4], rtol=1e-3)
        assert float(s4.val_loss[3]) < float(s4.val_loss[0])
    print("MULTIDEVICE OK")
    """
)


BATCHED_SCRIPT = textwrap.dedent(
    """
    import functools
    import jax, numpy as np
    from deepgaze_jax import batched_training as B
    from deepgaze_jax import input_pipeline as I
    from deepgaze_jax import training as T
    from deepgaze_jax.model import centerbias_on_grid
    from synthetic import CONFIG, make_data

    assert jax.device_count() == 4, jax.devices()
    grids, _, fixations = make_data(num_images=11)
    trains, vals = [list(range(9)), list(range(2, 11))], [[9, 10], [0, 1]]
    centerbias = [functools.partial(centerbias_on_grid, None)] * 2
    cfg = T.TrainConfig(max_epochs=3)
    sums = I.feature_sums(grids)
    states = B.stack_states([T.create_train_state(CONFIG, cfg, I.stats_from_sums(sums, t), key=jax.random.PRNGKey(k))
                             for k, t in enumerate(trains)])
    results = {}
    for n in (1, 4):
        mesh = I.data_mesh(jax.devices()[:n])
        groups, models = B.make_pool(grids, fixations, centerbias, trains, vals, CONFIG.cell, mesh=mesh, chunk_images=2)
        assert all(len(g.grids.sharding.device_set) == n for g in groups)
        steps = B.make_batched_steps(CONFIG, cfg, mesh)
        value, val, grad = steps.evaluate_some(states.params, states.stats, models, groups, np.arange(2))
        final = B.fit_many(states, groups, models, steps, cfg, log=lambda _: None)
        results[n] = (value, val, grad, final)
    (v1, w1, g1, s1), (v4, w4, g4, s4) = results[1], results[4]
    np.testing.assert_allclose(v4, v1, rtol=1e-5)
    np.testing.assert_allclose(w4, w1, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(g4), jax.tree_util.tree_leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # summed once over the devices, not four times
    np.testing.assert_allclose(s4.val_loss[:, :4], s1.val_loss[:, :4], rtol=1e-3)
    assert np.all(np.asarray(s4.val_loss[:, 3]) < np.asarray(s4.val_loss[:, 0]))
    print("MULTIDEVICE OK")
    """
)


def run_on_four_devices(script: str) -> None:
    """Runs ``script`` in a fresh process with 4 forced host devices; it must print MULTIDEVICE OK."""
    tests = Path(__file__).parent
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(tests), str(tests.parent / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "MULTIDEVICE OK" in proc.stdout


def test_four_devices_match_one():
    run_on_four_devices(SCRIPT)


def test_many_readouts_at_once_on_four_devices_match_one():
    run_on_four_devices(BATCHED_SCRIPT)
