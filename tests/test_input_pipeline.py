import numpy as np
import pytest

from deepgaze_jax import input_pipeline as I
from synthetic import TRAIN_IMAGES as TRAIN, training_data


@pytest.fixture(scope="module")
def data():
    return training_data()


def test_feature_stats_match_numpy(data):
    grids, *_ , stats, _, _ = data
    stacked = np.concatenate([np.asarray(grids[i], np.float64).reshape(-1, 6) for i in TRAIN])
    np.testing.assert_allclose(stats["readout"]["mean"], stacked.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["readout"]["std"], stacked.std(0), rtol=1e-5)


def test_stats_from_sums_of_a_subset_equal_feature_stats(data):
    grids, *_ = data
    sums = I.feature_sums(grids)
    for subset in ([0, 3, 5], list(range(8, 12))):
        direct = I.feature_stats(grids, subset)["readout"]
        summed = I.stats_from_sums(sums, subset)["readout"]
        for key in ("mean", "std"):
            np.testing.assert_array_equal(np.asarray(direct[key]), np.asarray(summed[key]))


def test_stack_padded_stacks_converts_and_pads_in_small_pages():
    arrays = [np.full((3, 600, 700), i, np.float16) for i in range(4)]  # 5 MB in float32: above NumPy's huge-page size
    out = I.stack_padded(arrays, [2, 0, 3], 5, np.float32)
    assert out.dtype == np.float32 and out.shape == (5, 3, 600, 700) and out.flags.writeable
    np.testing.assert_array_equal(out[:3, 0, 0, 0], [2, 0, 3])
    assert not out[3:].any()
    filled = I.stack_padded(arrays, [1, 2], 4, np.float32, fill=0)
    np.testing.assert_array_equal(filled[:, 1, 2, 3], [1, 2, 1, 1])


def test_zeros_in_small_pages_of_no_elements():
    assert I.zeros_in_small_pages((0, 4), np.float32).shape == (0, 4)
