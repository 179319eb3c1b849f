"""Dataset container, stimulus paths and the paper's working space."""

import numpy as np
import pytest

from deepgaze_jax import images
from deepgaze_jax.data import datasets, mit1003
from deepgaze_jax.data.datasets import Dataset, DatasetFormatError
from deepgaze_jax.data.fixations import Fixations
from synthetic import fixture_root


@pytest.fixture(scope="module")
def mit():
    try:
        return mit1003.mit1003()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_paper_sizes_by_orientation():
    sizes = [[768, 1024], [1024, 768], [500, 500], [683, 1024], [1024, 405]]
    np.testing.assert_array_equal(
        datasets.paper_sizes(sizes), [[384, 512], [512, 384], [384, 512], [384, 512], [512, 384]]
    )
    assert datasets.paper_sizes(np.zeros((0, 2))).shape == (0, 2)


def test_working_sizes_aspect_mode_matches_images_working_size():
    sizes = np.array([[768, 1024], [480, 640], [1000, 333]])
    expected = [images.working_size(h, w) for h, w in sizes]
    np.testing.assert_array_equal(datasets.working_sizes(sizes, "aspect"), expected)
    with pytest.raises(ValueError, match="mode must be"):
        datasets.working_sizes(sizes, "stretch")


def test_real_paper_sizes(mit):
    sizes = mit.image_sizes
    working = datasets.paper_sizes(sizes)
    is_1024x768 = (sizes[:, 1] == 1024) & (sizes[:, 0] == 768)
    assert is_1024x768.sum() == 463
    assert np.all(working[is_1024x768] == [384, 512])  # 512x384 (W x H)
    landscape = sizes[:, 1] >= sizes[:, 0]
    assert landscape.sum() == 779 and np.all(working[~landscape] == [512, 384])  # 224 portrait images


def test_real_rescaling_keeps_relative_coordinates(mit):
    working = mit.fixations.rescaled(datasets.paper_sizes(mit.image_sizes))
    for before, after in zip(mit.fixations.relative(), working.relative()):
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-12)
    sizes = working.image_sizes[working.n]
    assert np.all((working.x >= 0) & (working.x < sizes[:, 1]) & (working.y >= 0) & (working.y < sizes[:, 0]))


def test_real_to_working_space_on_a_few_images(mit):
    sizes = mit.image_sizes
    picks = [
        int(np.flatnonzero((sizes[:, 0] == 768) & (sizes[:, 1] == 1024))[0]),
        int(np.flatnonzero(sizes[:, 0] > sizes[:, 1])[0]),
        int(np.flatnonzero(sizes[:, 0] == sizes[:, 1])[0]),
        int(np.flatnonzero((sizes[:, 1] == 1024) & (sizes[:, 0] < 768))[0]),
    ]
    subset = mit.subset(picks)
    assert subset.stimulus_names == tuple(mit.stimulus_names[i] for i in picks)
    loaded, fixations = datasets.to_working_space(subset, workers=2, progress=False)
    expected_sizes = [[384, 512], [512, 384], [384, 512], [384, 512]]
    assert [im.shape for im in loaded] == [(h, w, 3) for h, w in expected_sizes]
    assert all(im.dtype == np.uint8 for im in loaded)
    np.testing.assert_array_equal(fixations.image_sizes, expected_sizes)
    np.testing.assert_array_equal(fixations.counts_per_image(), subset.fixations.counts_per_image())
    np.testing.assert_array_equal(loaded[1], images.resize(images.to_rgb_uint8(subset.stimuli[1]), (512, 384)))
    sequential, _ = datasets.to_working_space(subset.subset([1]), workers=1, progress=False)
    np.testing.assert_array_equal(sequential[0], loaded[1])


def test_to_working_space_aspect_mode(tmp_path):
    root = fixture_root(tmp_path)
    ds = mit1003.mit1003(root)
    assert ds.name == "MIT1003" and len(ds) == 3
    loaded, fixations = datasets.to_working_space(ds, mode="aspect", progress=False)
    expected = [images.working_size(h, w) for h, w in ds.image_sizes]
    assert [im.shape[:2] for im in loaded] == expected
    np.testing.assert_allclose(fixations.relative()[0], ds.fixations.relative()[0])


def test_dataset_checks(tmp_path):
    root = fixture_root(tmp_path)
    ds = mit1003.mit1003(root)
    with pytest.raises(ValueError, match="3 stimuli but fixations on 2 images"):
        Dataset(ds.stimuli, ds.fixations.subset_images([0, 1]), "x")
    wrong, _ = Fixations.create([1.0], [1.0], [0], [[5, 8]])
    with pytest.raises(DatasetFormatError, match=r"img0\.png decodes to 6x8 but the dataset records 5x8"):
        Dataset(ds.stimuli[:1], wrong, "x").load_image(0)


@pytest.mark.slow
def test_real_to_working_space_all(mit):
    loaded, fixations = datasets.to_working_space(mit, workers=2)
    assert len(loaded) == 1003 and len(fixations) == 104_171
    assert {im.shape for im in loaded} == {(384, 512, 3), (512, 384, 3)}
