import numpy as np
import pytest

from deepgaze_jax.data.fixations import FixationError, Fixations


def make(x, y, n, sizes=((10, 20), (30, 40)), **kw):
    return Fixations.create(x, y, n, sizes, **kw)


def test_valid_fixations_round_trip():
    fix, report = make([0.0, 19.9, 5], [0.0, 9.9, 29], [0, 0, 1], subject=[0, 1, 1], duration=[100, 200, 300])
    assert len(fix) == 3 and report.dropped == 0 and report.images_without_fixations == ()
    assert fix.counts_per_image().tolist() == [2, 1]
    assert fix.num_subjects == 2
    rows, cols = fix.pixel_indices()
    assert rows.tolist() == [0, 9, 29] and cols.tolist() == [0, 19, 5]


@pytest.mark.parametrize(
    "x, y, n, what",
    [([20.0], [1.0], [0], "out of bounds"), ([np.nan], [1.0], [0], "NaN"), ([1.0], [1.0], [5], "bad image index"),
     ([-0.1], [1.0], [0], "out of bounds")],
)
def test_invalid_fixations_raise_or_are_dropped_and_counted(x, y, n, what):
    with pytest.raises(FixationError, match="1 invalid"):
        make(x + [1.0], y + [1.0], n + [0])
    fix, report = make(x + [1.0], y + [1.0], n + [0], on_invalid="drop")
    assert len(fix) == 1 and report.dropped == 1
    assert report.images_without_fixations == (1,)


def test_shape_mismatch_is_reported():
    with pytest.raises(FixationError, match="shape mismatch"):
        make([1.0, 2.0], [1.0], [0, 0])


def test_rescaled_keeps_relative_positions_and_stays_inside():
    fix, _ = make([0.0, 19.99, 10.0], [0.0, 9.99, 15.0], [0, 0, 1])
    big = fix.rescaled([(100, 200), (60, 80)])
    rx, ry = fix.relative()
    brx, bry = big.relative()
    np.testing.assert_allclose(rx, brx, atol=1e-6)
    np.testing.assert_allclose(ry, bry, atol=1e-6)
    assert np.all(big.x < big.image_sizes[big.n, 1]) and np.all(big.y < big.image_sizes[big.n, 0])


def test_subset_images_renumbers():
    fix, _ = make([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0, 1, 1])
    sub = fix.subset_images([1])
    assert len(sub) == 2 and sub.n.tolist() == [0, 0] and sub.image_sizes.tolist() == [[30, 40]]
