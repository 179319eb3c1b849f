import jax
import numpy as np
import pytest
from PIL import Image

import deepgaze_jax
import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax import ModelConfig, cli, init_params, save_model
from deepgaze_jax.data.nus_mat import save_nus_mat
from deepgaze_jax.plotting import (
    CONTOUR_COLORS,
    FIXATION_COLOR,
    equal_mass_levels,
    expected_fixations_per_region,
    explained_fraction,
    plot_ig_scatter,
    plot_samples,
    save_overlay,
)


def gaussian_log_density(height=60, width=80):
    """An anisotropic Gaussian centred off the pixel grid (no two pixels share a value)."""
    yy, xx = np.mgrid[0:height, 0:width]
    u = (xx - 0.35 * width - 0.123) / (0.15 * width)
    v = (yy - 0.5 * height - 0.377) / (0.13 * width)
    log_p = -(u**2 + v**2) / 2
    return (log_p - np.log(np.exp(log_p).sum())).astype(np.float32)


def gradient_image(height=60, width=80):
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], axis=-1).astype(np.uint8)


def count_colour(path, colour, tolerance=10):
    rgb = np.asarray(Image.open(path).convert("RGB"), np.int64)
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).max(axis=-1) <= tolerance).sum())


def test_levels_of_exact_blocks():
    # masses 30% | 15% 15% | 4% x 5 | 0.8% x 25: cumulative 30%, 60%, 76% reach 25%, 50%, 75%
    p = np.array([0.3] + [0.15] * 2 + [0.04] * 5 + [0.008] * 25 + [0.0] * 2).reshape(5, 7)
    log_p = np.log(np.maximum(p, 1e-30))
    np.testing.assert_allclose(equal_mass_levels(log_p), np.log([0.3, 0.15, 0.04]))


def test_levels_split_mass_into_quarters():
    log_p = gaussian_log_density()
    p = np.exp(log_p.astype(np.float64))
    levels = equal_mass_levels(log_p)
    assert np.all(np.diff(levels) < 0)
    for level, mass in zip(levels, (0.25, 0.5, 0.75)):
        # the smallest superlevel set holding at least the mass
        assert p[log_p >= level].sum() >= mass - 1e-6
        assert p[log_p > level].sum() < mass
    regions = {
        "inner": log_p >= levels[0],
        "second": (log_p < levels[0]) & (log_p >= levels[1]),
        "third": (log_p < levels[1]) & (log_p >= levels[2]),
        "outer": log_p < levels[2],
    }
    expected = expected_fixations_per_region(log_p, regions, n=1000)
    np.testing.assert_allclose(list(expected.values()), 250, atol=1000 * p.max() + 1e-3)
    assert sum(expected.values()) == pytest.approx(1000)


def test_levels_reject_bad_masses():
    with pytest.raises(ValueError, match="masses"):
        equal_mass_levels(gaussian_log_density(), masses=(0.5, 1.0))


def test_statistics_are_exported():
    assert deepgaze_jax.equal_mass_levels is equal_mass_levels
    assert deepgaze_jax.expected_fixations_per_region is expected_fixations_per_region
    assert {"equal_mass_levels", "expected_fixations_per_region"} <= set(deepgaze_jax.__all__)


def test_overlay_png(tmp_path):
    image, log_p = gradient_image(), gaussian_log_density()
    fixations = (np.array([10.5, 40.2]), np.array([5.5, 30.1]))
    path = save_overlay(image, log_p, tmp_path / "overlay.png", fixations=fixations)
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape == image.shape  # exactly the image's pixel size
    assert picture.std() > 20
    for colour in (*CONTOUR_COLORS[1:], FIXATION_COLOR):
        assert count_colour(path, colour) > 10, colour


def test_overlay_needs_a_density_of_the_image_size(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        save_overlay(gradient_image(), gaussian_log_density(30, 40), tmp_path / "bad.png")


def test_overlay_of_uniform_density_has_no_contours(tmp_path):
    image = gradient_image()
    path = save_overlay(image, np.full((60, 80), -np.log(4800), np.float32), tmp_path / "uniform.png")
    assert count_colour(path, CONTOUR_COLORS[2]) == 0


def test_samples_png(tmp_path):
    image, log_p = gradient_image(), gaussian_log_density()
    human = (np.array([20.0, 30.0, 40.0]), np.array([30.0, 20.0, 35.0]))
    path = plot_samples(image, log_p, human, jax.random.PRNGKey(0), tmp_path / "samples.png")
    picture = Image.open(path)
    assert picture.width > 1.8 * picture.height  # two panels side by side
    assert count_colour(path, FIXATION_COLOR, tolerance=20) > 20
    with pytest.raises(ValueError, match="fixations"):
        plot_samples(image, log_p, (np.zeros(3), np.zeros(2)), jax.random.PRNGKey(0), tmp_path / "bad.png")


def test_ig_scatter_png(tmp_path):
    rng = np.random.default_rng(0)
    gold = rng.uniform(0.5, 3.0, 50)
    model = 0.8 * gold
    assert explained_fraction(model, gold) == pytest.approx(0.8)
    path = plot_ig_scatter(model, gold, tmp_path / "ig.png")
    assert np.asarray(Image.open(path).convert("L")).std() > 10
    with pytest.raises(ValueError, match="shape"):
        plot_ig_scatter(model[:3], gold, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="NaN"):
        plot_ig_scatter(np.full(50, np.nan), gold, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="positive"):
        plot_ig_scatter(model, -gold, tmp_path / "bad.png")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A saved fake-backbone model."""
    path = tmp_path_factory.mktemp("model") / "fake_model.npz"
    save_model(init_params(ModelConfig(backbone="fake"), jax.random.PRNGKey(0)), path)
    return path


def test_plot_command_with_fixation_array(tmp_path, model_file):
    Image.fromarray(gradient_image(96, 128)).save(tmp_path / "street.png")
    np.save(tmp_path / "fix.npy", np.array([[10.0, 20.0], [100.5, 50.25]]))
    argv = ["plot", str(tmp_path / "street.png"), "--fixations-npy", str(tmp_path / "fix.npy")]
    assert cli.main([*argv, "--model", str(model_file), "--out", str(tmp_path / "out")]) == 0
    for name in ("street_density.png", "street_samples.png"):
        assert Image.open(tmp_path / "out" / name).size[0] > 100


def test_plot_command_with_dataset(tmp_path, model_file):
    (tmp_path / "stimuli").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(gradient_image(96, 128)).save(tmp_path / "stimuli" / name)
    subjects = [([10.0, 60.0], [20.0, 40.0], [200.0, 300.0]), ([100.0], [80.0], [250.0])]
    save_nus_mat(tmp_path / "fixations.mat", [("a.png", subjects), ("b.png", subjects[:1])])
    dataset = ["--stimuli", str(tmp_path / "stimuli"), "--fixations", str(tmp_path / "fixations.mat")]
    out = ["--model", str(model_file), "--out", str(tmp_path / "out")]
    assert cli.main(["plot", *dataset, "--index", "1", *out]) == 0
    assert (tmp_path / "out" / "b_samples.png").is_file()
    assert cli.main(["plot", *dataset, "--index", "2", *out]) == 1  # out of range
    assert cli.main(["plot", *dataset, *out]) == 2  # --index missing
