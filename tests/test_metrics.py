"""Metrics on hand-worked cases and brute-force comparisons."""

import numpy as np
import pytest

from deepgaze_jax import metrics
from deepgaze_jax.centerbias import leave_one_image_out_maps
from deepgaze_jax.densities import log_normalize, safe_log
from deepgaze_jax.kde import kde_grid
from deepgaze_jax.data.fixations import Fixations


def uniform(shape):
    return np.full(shape, -np.log(np.prod(shape)), np.float32)


def peaked(shape, rows, cols, floor=-60.0):
    """Log density with (almost) all mass spread evenly on the given pixels."""
    values = np.full(shape, floor)
    values[rows, cols] = 0.0
    return log_normalize(values)


# --- grid primitives ---


def test_empirical_map_default_sigma_is_one_degree():
    shape = (384, 512)
    expected = kde_grid(np.array([100]), np.array([200]), shape, 17.5, 17.5)
    np.testing.assert_allclose(metrics.empirical_map(np.array([100]), np.array([200]), shape), expected)


# --- log-likelihood ---


def test_uniform_log_likelihood_is_zero_bits():
    np.testing.assert_allclose(metrics.log_likelihood_bits(uniform((6, 7)), np.array([0, 5]), np.array([6, 3])), 0.0, atol=1e-6)


def test_perfect_predictor_log_likelihood():
    # 2 of 20 pixels share the mass: log2(0.5 * 20) = log2(10) bits per fixation.
    rows, cols = np.array([1, 3]), np.array([2, 4])
    ll = metrics.log_likelihood_bits(peaked((4, 5), rows, cols), rows, cols)
    np.testing.assert_allclose(ll, np.log2(10), atol=1e-9)


def test_bits_over_uniform_units():
    assert metrics.bits_over_uniform(np.log(0.25), 8) == pytest.approx(1.0)


# --- AUC ---


def brute_force_auc(positives, negatives):
    diff = np.asarray(positives, float)[:, None] - np.asarray(negatives, float)[None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean()


def test_rank_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    saliency = rng.integers(0, 5, size=(9, 11)).astype(float)  # many ties
    rows, cols = rng.integers(0, 9, 30), rng.integers(0, 11, 30)
    auc = metrics.auc_per_fixation(saliency, rows, cols).mean()
    assert auc == pytest.approx(brute_force_auc(saliency[rows, cols], saliency.ravel()))
    neg_rows, neg_cols = rng.integers(0, 9, 50), rng.integers(0, 11, 50)
    sauc = metrics.sauc_per_fixation(saliency, rows, cols, neg_rows, neg_cols).mean()
    assert sauc == pytest.approx(brute_force_auc(saliency[rows, cols], saliency[neg_rows, neg_cols]))


def test_auc_uniform_is_half():
    rows, cols = np.array([0, 2, 2]), np.array([1, 1, 3])
    density = uniform((3, 4))
    np.testing.assert_allclose(metrics.auc_per_fixation(density, rows, cols), 0.5)
    np.testing.assert_allclose(metrics.sauc_per_fixation(density, rows, cols, rows[::-1], cols), 0.5)
    assert metrics.auc_judd(density, rows, cols) == pytest.approx(0.5)


def test_auc_perfect_predictor():
    # One fixation on a 100x100 image: beats 9999 pixels, ties with itself (half).
    rows, cols = np.array([40]), np.array([60])
    density = peaked((100, 100), rows, cols)
    assert metrics.auc_per_fixation(density, rows, cols)[0] == pytest.approx(1 - 0.5 / 10000)
    assert metrics.auc_judd(density, rows, cols) == pytest.approx(1.0)
    assert metrics.sauc_per_fixation(density, rows, cols, np.array([0, 99]), np.array([0, 5]))[0] == 1.0


def test_auc_judd_hand_worked():
    # Values 4 3 / 2 1, fixation on the 3: one threshold (3); TPR 1, FPR 1/3 (the 4 of {4, 2, 1}).
    # Curve (0,0) - (1/3, 1) - (1, 1): area 1/6 + 2/3 = 5/6 (Mann-Whitney vs non-fixated: 2/3).
    saliency = np.array([[4.0, 3.0], [2.0, 1.0]])
    assert metrics.auc_judd(saliency, np.array([0]), np.array([1])) == pytest.approx(5 / 6)
    # A pixel fixated twice counts once.
    assert metrics.auc_judd(saliency, np.array([0, 0]), np.array([1, 1])) == pytest.approx(5 / 6)


# --- NSS, CC, KL, SIM ---


def test_nss_hand_worked_and_uniform():
    density = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    expected = (0.4 - 0.25) / np.std([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(metrics.nss_per_fixation(density, np.array([0]), np.array([3])), expected)
    np.testing.assert_allclose(metrics.nss_per_fixation(uniform((5, 5)), np.array([1, 2]), np.array([3, 4])), 0.0)


def test_map_metrics_of_a_map_with_itself():
    rng = np.random.default_rng(1)
    empirical = metrics.empirical_map(rng.integers(0, 30, 12), rng.integers(0, 40, 12), (30, 40), sigma=3.0)
    log_empirical = safe_log(empirical)
    assert metrics.correlation_coefficient(log_empirical, empirical) == pytest.approx(1.0)
    assert metrics.kl_divergence_nats(empirical, log_empirical) == pytest.approx(0.0, abs=1e-12)
    assert metrics.similarity(log_empirical, empirical) == pytest.approx(1.0)


def test_map_metrics_against_uniform():
    empirical = np.zeros((2, 2))
    empirical[0, 0] = 1.0
    density = uniform((2, 2))
    assert metrics.kl_divergence_nats(empirical, density) == pytest.approx(np.log(4))
    assert metrics.similarity(density, empirical) == pytest.approx(0.25)
    assert metrics.correlation_coefficient(density, empirical) == 0.0  # constant map: defined as 0


# --- dataset level ---


def make_fixations():
    # Image 0 (4x5): 3 fixations, two on pixel (1, 2); image 1 (6x4): 1 fixation; image 2: none.
    x = np.array([2.5, 4.2, 2.9, 1.5])
    y = np.array([1.5, 3.9, 1.1, 0.2])
    fixations, _ = Fixations.create(x, y, [0, 0, 0, 1], [(4, 5), (6, 4), (3, 3)], subject=[0, 1, 2, 0])
    return fixations


def test_evaluate_uniform_and_perfect():
    fixations = make_fixations()
    rows, cols = fixations.pixel_indices()

    def perfect(i):
        on = fixations.n == i
        return peaked(tuple(fixations.image_sizes[i]), rows[on], cols[on])

    def flat(i):
        return uniform(tuple(fixations.image_sizes[i]))

    gold = np.concatenate([perfect(0)[rows[:3], cols[:3]], perfect(1)[rows[3:], cols[3:]]])
    result = metrics.evaluate_log_densities(flat, fixations, baseline_fn=flat, gold_loglik=gold, progress=False)
    assert result["num_images"] == 2 and result["num_fixations"] == 4
    for key, value in {"ll_bits": 0, "ig_bits": 0, "auc": 0.5, "sauc": 0.5, "nss": 0, "auc_judd": 0.5, "cc": 0}.items():
        assert result[key] == pytest.approx(value, abs=1e-6), key
    assert result["ig_explained_pct"] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_array_equal(result["per_image_index"], [0, 1])

    result = metrics.evaluate_log_densities(perfect, fixations, baseline_fn=flat, gold_loglik=gold, progress=False)
    # Image 0: mass on 2 of 20 pixels -> log2(10) per fixation; image 1: 1 of 24 -> log2(24).
    assert result["ll_bits"] == pytest.approx((3 * np.log2(10) + np.log2(24)) / 4)
    assert result["ll_bits_imgavg"] == pytest.approx((np.log2(10) + np.log2(24)) / 2)
    assert result["ig_bits"] == pytest.approx(result["ll_bits"])
    assert result["ig_explained_pct"] == pytest.approx(100.0)
    assert result["auc_judd"] == pytest.approx(1.0)
    assert result["sauc"] > 0.5
    for key in ("ll_bits", "auc", "sauc", "nss", "ig_bits", "cc", "kl_nats", "sim", "auc_judd"):
        assert result[f"per_image_{key}"].shape == (2,)
        assert np.all(np.isfinite(result[f"per_image_{key}"]))


def test_evaluate_rejects_wrong_shape():
    fixations = make_fixations()
    with pytest.raises(ValueError, match="shape"):
        metrics.evaluate_log_densities(lambda i: uniform((3, 3)), fixations, progress=False)


# --- sAUC without the centre bias ---------------------------------------------------------------


def two_image_case():
    """Two 1 x 3 images: fixations at columns 2, 0 on image 0 and column 0 on image 1."""
    fixations, _ = Fixations.create(x=[2.5, 0.5, 0.5], y=[0.5, 0.5, 0.5], n=[0, 0, 1], image_sizes=[(1, 3), (1, 3)])
    maps = [np.log(np.array([[0.2, 0.3, 0.5]])), np.log(np.array([[0.2, 0.5, 0.3]]))]
    return fixations, maps


def test_sauc_no_centerbias_hand_worked():
    fixations, maps = two_image_case()
    # image 0's negative: image 1's fixation, column 0 -> p0 = 0.2: fixation at p 0.5 wins (1), at 0.2 ties (0.5).
    # image 1's negatives: columns 2 and 0 -> p1 = 0.3, 0.2: its fixation at p 0.2 loses and ties (0.25).
    np.testing.assert_allclose(metrics.shuffled_auc_per_fixation(maps.__getitem__, fixations), [1.0, 0.5, 0.25])
    result = metrics.sauc_no_centerbias(maps.__getitem__, fixations)
    assert result["sauc_no_centerbias"] == pytest.approx(1.75 / 3)
    assert result["sauc_no_centerbias_imgavg"] == pytest.approx(0.5)  # (0.75 + 0.25) / 2
    np.testing.assert_allclose(result["per_image_sauc_no_centerbias"], [0.75, 0.25])


def test_shuffled_auc_matches_evaluate_log_densities():
    rng = np.random.default_rng(5)
    sizes = [(6, 8), (6, 8), (8, 6)]
    fixations, _ = Fixations.create(
        x=rng.uniform(0, 6, 30), y=rng.uniform(0, 6, 30), n=rng.integers(0, 3, 30), image_sizes=sizes
    )
    maps = [log_normalize(rng.normal(size=s)) for s in sizes]
    expected = metrics.evaluate_log_densities(maps.__getitem__, fixations, progress=False)
    result = metrics.sauc_no_centerbias(maps.__getitem__, fixations)
    assert result["sauc_no_centerbias"] == pytest.approx(expected["sauc"])
    np.testing.assert_allclose(result["per_image_sauc_no_centerbias"], expected["per_image_sauc"])


def test_removing_a_centre_bias_raises_shuffled_auc():
    # Fixations sit at the centre of image 0 and near the border of image 1; a map that is the
    # image's saliency (a bump at the fixated spot) times a centre bias favours the centre on
    # both, so image 1's fixation loses against image 0's central fixation used as its negative.
    fixations, _ = Fixations.create(x=[4.5, 0.5], y=[4.5, 0.5], n=[0, 1], image_sizes=[(9, 9), (9, 9)])
    yy, xx = np.mgrid[0:9, 0:9]
    centre = -((xx - 4) ** 2 + (yy - 4) ** 2) / 2.0
    saliency = [-((xx - 4) ** 2 + (yy - 4) ** 2) / 8.0, -(xx**2 + yy**2) / 8.0]
    with_cb = [log_normalize(s + centre) for s in saliency]
    without_cb = [log_normalize(s) for s in saliency]
    assert metrics.sauc_no_centerbias(without_cb.__getitem__, fixations)["sauc_no_centerbias"] == 1.0
    assert metrics.shuffled_auc_per_fixation(with_cb.__getitem__, fixations).tolist() == [1.0, 0.0]


def test_shuffled_auc_checks_shapes_and_single_images():
    fixations, maps = two_image_case()
    with pytest.raises(ValueError, match="has shape \\(1, 4\\), fixations say \\(1, 3\\)"):
        metrics.shuffled_auc_per_fixation(lambda i: np.zeros((1, 4)), fixations)
    alone = fixations.subset_images([0])
    np.testing.assert_array_equal(metrics.shuffled_auc_per_fixation(maps.__getitem__, alone), [0.5, 0.5])
    with pytest.raises(ValueError, match="empty"):
        metrics.sauc_no_centerbias(maps.__getitem__, fixations.select(np.zeros(3, bool)))


def test_scoring_images_on_threads_gives_the_same_numbers():
    rng = np.random.default_rng(6)
    sizes = [(12, 16), (16, 12), (12, 16), (10, 10)] * 5
    fixations, _ = Fixations.create(x=rng.uniform(0, 10, 300), y=rng.uniform(0, 10, 300), n=rng.integers(0, 20, 300),
                                    image_sizes=sizes)
    maps = [log_normalize(rng.normal(size=s)) for s in sizes]
    # the centre bias's maps fill a cache per image size as they are asked for: from three threads at once here
    serial, threaded = (metrics.evaluate_log_densities(
        maps.__getitem__, fixations, leave_one_image_out_maps(fixations, 0.1, 0.2), progress=False, workers=w)
        for w in (1, 3))
    assert serial.keys() == threaded.keys()
    for key, value in serial.items():
        np.testing.assert_array_equal(threaded[key], value)
