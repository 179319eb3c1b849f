"""Pseudo-fixations from mouse trajectories: hand-worked trajectories and a brute-force reference."""

import numpy as np
import pytest

from deepgaze_jax.data.mouse_fixations import (
    PseudoFixationConfig,
    dispersion_window_starts,
    pseudo_fixations,
    trajectory_starts,
)


def test_trajectory_starts_at_new_workers_and_restarted_orders():
    subject = [1, 1, 1, 2, 2, 1, 1, 3, 3, 3, 3]
    order = [1, 2, 3, 1, 2, 1, 2, 1, 2, 1, 2]  # worker 3 viewed the image twice
    expected = [1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    np.testing.assert_array_equal(trajectory_starts(subject, order), np.array(expected, bool))


def test_slow_runs_become_fixations_at_their_mean_and_lone_samples_are_dropped():
    # slow (steps 1, 1), fast jump to a lone sample, fast jump, slow (step exactly 24: slow), fast.
    x = [0, 1, 2, 100, 200, 224, 400]
    y = [5, 5, 8, 0, 0, 0, 0]
    fix = pseudo_fixations(x, y, np.eye(1, 7, dtype=bool)[0], PseudoFixationConfig(max_step_px=24, max_dispersion_px=1e9))
    np.testing.assert_allclose(fix.x, [1.0, 212.0])
    np.testing.assert_allclose(fix.y, [6.0, 0.0])
    np.testing.assert_array_equal(fix.num_samples, [3, 2])
    np.testing.assert_array_equal(fix.trajectory, [0, 0])


def test_min_samples_one_keeps_lone_samples():
    fix = pseudo_fixations([0, 100, 200], [0, 0, 0], [True, False, False], PseudoFixationConfig(min_samples=1))
    np.testing.assert_allclose(fix.x, [0, 100, 200])


def test_fixations_never_span_two_trajectories():
    x, y = [0, 1, 2, 3], [0, 0, 0, 0]
    fix = pseudo_fixations(x, y, [True, False, True, False])
    np.testing.assert_allclose(fix.x, [0.5, 2.5])
    np.testing.assert_array_equal(fix.trajectory, [0, 1])


def test_a_slow_drift_is_cut_into_windows_of_bounded_dispersion():
    # 11 samples 10 px apart: windows x = 0..40 (dispersion 40; adding 50 would make 50 > 48),
    # 50..90, and 100 alone (one sample: dropped).
    x = np.arange(0, 101, 10.0)
    fix = pseudo_fixations(x, np.zeros(11), np.eye(1, 11, dtype=bool)[0], PseudoFixationConfig(max_dispersion_px=48))
    np.testing.assert_allclose(fix.x, [20.0, 70.0])
    np.testing.assert_array_equal(fix.num_samples, [5, 5])


def test_dispersion_adds_both_axes():
    # diagonal steps of 14 px (slow): (0,0) .. (20,20) has dispersion 40 <= 48; (30,30) would make 60.
    v = [0, 10, 20, 30, 31]
    fix = pseudo_fixations(v, v, [True, False, False, False, False])
    np.testing.assert_allclose(fix.x, [10.0, 30.5])


def greedy_reference(x, y, limit):
    """Plain loop: the start flags of the greedy dispersion windows of one run."""
    cuts, members = [], []
    for xi, yi in zip(x, y):
        trial = members + [(xi, yi)]
        xs, ys = zip(*trial)
        if members and (max(xs) - min(xs)) + (max(ys) - min(ys)) > limit:
            cuts.append(True)
            members = [(xi, yi)]
        else:
            cuts.append(not members)
            members = trial
    return cuts


def test_vectorised_dispersion_windows_match_a_plain_loop():
    rng = np.random.default_rng(0)
    lengths = np.array([1, 7, 30, 3, 50, 12])
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    x, y = (np.cumsum(rng.normal(0, 6, lengths.sum())) for _ in range(2))
    cuts = dispersion_window_starts(x, y, first, lengths, 30.0)
    expected = np.concatenate([greedy_reference(x[a : a + n], y[a : a + n], 30.0) for a, n in zip(first, lengths)])
    np.testing.assert_array_equal(cuts, expected)
    assert expected.sum() > len(lengths)  # the walk is long enough that some runs are cut


def test_empty_input_and_bad_arguments():
    assert len(pseudo_fixations([], [], []).x) == 0
    with pytest.raises(ValueError, match="same length"):
        pseudo_fixations([0, 1], [0], [True, False])
    with pytest.raises(ValueError, match="starts\\[0\\] must be True"):
        pseudo_fixations([0, 1], [0, 0], [False, False])
    with pytest.raises(ValueError, match="must be positive"):
        PseudoFixationConfig(max_step_px=0)
    with pytest.raises(ValueError, match="min_samples"):
        PseudoFixationConfig(min_samples=0)
