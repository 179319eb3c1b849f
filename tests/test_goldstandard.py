"""Gold standard: exact leave-one-observer-out KDE, fitting, and the real MIT1003 numbers."""

import time

import numpy as np
import pytest

from deepgaze_jax import centerbias, goldstandard
from deepgaze_jax.data.datasets import paper_sizes
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.data.mit1003 import find_mit1003_root, mit1003
from deepgaze_jax.kde import kde_grid
from deepgaze_jax.metrics import bits_over_uniform


def hotspot_fixations(seed=0, images=40, subjects=8, per_subject=5, shape=(48, 64)):
    """Every observer looks around the same two image-specific hotspots (std 2 px)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    x, y, n, s = [], [], [], []
    for i in range(images):
        spots = rng.uniform([8, 8], [w - 8, h - 8], size=(2, 2))
        for subject in range(subjects):
            chosen = spots[rng.integers(0, 2, per_subject)] + rng.normal(0, 2, (per_subject, 2))
            chosen = np.clip(chosen, 0, [w - 0.01, h - 0.01])
            x.extend(chosen[:, 0]), y.extend(chosen[:, 1])
            n.extend([i] * per_subject), s.extend([subject] * per_subject)
    fixations, _ = Fixations.create(x, y, n, [shape] * images, subject=s)
    return fixations


def test_other_observers_kde_is_the_kde_of_the_others():
    fixations = hotspot_fixations(images=3, subjects=4, per_subject=3)
    fixations = fixations.select(~((fixations.n == 2) & (fixations.subject == 3)))  # an observer missing
    bandwidth = 0.05
    kde = goldstandard.other_observers_kde(fixations, bandwidth)
    rows, cols = fixations.pixel_indices()
    for k in range(len(fixations)):
        others = (fixations.n == fixations.n[k]) & (fixations.subject != fixations.subject[k])
        shape = tuple(fixations.image_sizes[fixations.n[k]])
        sigma = bandwidth * max(shape)
        expected = kde_grid(rows[others], cols[others], shape, sigma, sigma)[rows[k], cols[k]]
        assert kde[k] == pytest.approx(expected, rel=1e-9)


def test_single_observer_has_no_others():
    fixations, _ = Fixations.create([3.0, 5.0, 7.0], [2.0, 2.0, 2.0], [0, 0, 1], [(10, 10), (10, 10)], subject=[0, 0, 1])
    np.testing.assert_array_equal(goldstandard.other_observers_kde(fixations, 0.1), 0.0)
    gold = goldstandard.GoldStandard(0.1, 0.5, 0.3, 0.2, mean_loglik_nats=0.0)
    loglik = goldstandard.gold_standard_loglik(fixations, np.full(3, -np.log(100)), gold)
    np.testing.assert_allclose(loglik, np.log(0.5 / 100), rtol=1e-12)  # centre bias + uniform only


def test_fit_on_consistent_observers():
    fixations = hotspot_fixations()
    cb = centerbias.fit_center_bias(fixations)
    cb_loglik = centerbias.leave_one_image_out(fixations, cb.bandwidth, cb.uniform_weight)
    gold = goldstandard.fit_gold_standard(fixations, cb_loglik)
    loglik = goldstandard.gold_standard_loglik(fixations, cb_loglik, gold)
    assert gold.mean_loglik_nats == pytest.approx(loglik.mean())
    assert gold.kde_weight + gold.centerbias_weight + gold.uniform_weight == pytest.approx(1.0)
    assert gold.kde_weight > 0.8  # observers agree: the others' fixations predict best
    # Hotspot std 2 px on 64 px images: a bandwidth of a few pixels.
    assert 0.5 / 64 < gold.bandwidth < 6 / 64
    assert loglik.mean() > cb_loglik.mean() + 1.0


@pytest.fixture(scope="module")
def mit1003_paper():
    try:
        find_mit1003_root()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    fixations = mit1003().fixations
    return fixations.rescaled(paper_sizes(fixations.image_sizes))


def test_mit1003_centre_bias_and_gold_standard(mit1003_paper):
    """Real data at 512x384: leave-one-image-out centre bias beats uniform (reference ~0.88
    bits/fixation), the leave-one-observer-out gold standard beats it (reference ~2.12)."""
    fixations = mit1003_paper
    start = time.perf_counter()
    cb = centerbias.fit_center_bias(fixations)
    cb_loglik = centerbias.leave_one_image_out(fixations, cb.bandwidth, cb.uniform_weight)
    gold = goldstandard.fit_gold_standard(fixations, cb_loglik)
    gold_loglik = goldstandard.gold_standard_loglik(fixations, cb_loglik, gold)
    elapsed = time.perf_counter() - start
    pixels = np.prod(fixations.image_sizes[fixations.n], axis=1)
    cb_bits = bits_over_uniform(cb_loglik, pixels).mean()
    gold_bits = bits_over_uniform(gold_loglik, pixels).mean()
    print(
        f"\nMIT1003 512x384, {len(fixations)} fixations, fits in {elapsed:.1f} s\n"
        f"  centre bias:   {cb_bits:.4f} bits/fix over uniform (bandwidth {cb.bandwidth:.4f} rel, "
        f"uniform weight {cb.uniform_weight:.2e})\n"
        f"  gold standard: {gold_bits:.4f} bits/fix over uniform (bandwidth {gold.bandwidth:.4f} of 512 px, "
        f"weights kde {gold.kde_weight:.3f} / centre bias {gold.centerbias_weight:.3f} / uniform {gold.uniform_weight:.4f})"
    )
    assert 0.8 < cb_bits < 0.95
    assert 2.0 < gold_bits < 2.25
    assert np.all(np.isfinite(gold_loglik)) and np.all(np.isfinite(cb_loglik))
