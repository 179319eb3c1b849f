import jax
import numpy as np
import pytest
from PIL import Image

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax import ModelConfig, init_params, predict_density, sample_fixations
from deepgaze_jax.densities import log_normalize
from deepgaze_jax.predict import predict_density_without_centerbias
from deepgaze_jax.images import ImageError
from deepgaze_jax.model import Ensemble, mixture


@pytest.fixture(scope="module")
def params():
    return init_params(ModelConfig(backbone="fake"), jax.random.PRNGKey(0))


def assert_density(log_density, shape):
    assert log_density.shape == shape and log_density.dtype == np.float32
    assert np.all(np.isfinite(log_density))
    lse = np.log(np.exp(log_density.astype(np.float64)).sum())
    assert abs(lse) < 1e-4, lse


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((384, 512, 3), np.uint8),
        np.full((384, 512, 3), 255, np.uint8),
        np.full((300, 200, 3), 77, np.uint8),
        np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8),
    ],
    ids=["black", "white", "constant", "random-odd"],
)
def test_densities_are_normalised_and_finite(params, image):
    assert_density(predict_density(params, image), image.shape[:2])


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 1000), (1537, 2049)])
def test_tiny_and_large_odd_sizes(params, shape):
    assert_density(predict_density(params, np.zeros(shape, np.uint8)), shape)


def test_grayscale_rgba_pil_and_path_inputs(params, tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    ref = predict_density(params, rgb)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    np.testing.assert_allclose(predict_density(params, tmp_path / "x.png"), ref)
    np.testing.assert_allclose(predict_density(params, Image.fromarray(rgb)), ref)
    rgba = np.concatenate([rgb, np.full((96, 128, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_allclose(predict_density(params, rgba), ref)
    assert_density(predict_density(params, rgb[..., 0]), (96, 128))


def test_batches_equal_single_images(params):
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(384, 512, 3), (100, 80, 3), (384, 512, 3)]]
    batched = predict_density(params, imgs, batch_size=2)
    for img, out in zip(imgs, batched):
        np.testing.assert_allclose(out, predict_density(params, img), atol=1e-5)
    stacked = predict_density(params, np.stack([imgs[0], imgs[2]]))
    assert isinstance(stacked, list) and len(stacked) == 2


def test_working_size_images_use_exact_upsampling(params):
    out = predict_density(params, np.zeros((384, 512, 3), np.uint8))
    cell = params.config.cell
    blocks = out.reshape(384 // cell, cell, 512 // cell, cell)
    assert np.all(blocks == blocks[:, :1, :, :1])


def test_centerbias_argument(params):
    img = np.zeros((384, 512, 3), np.uint8)
    yy, xx = np.mgrid[0:48, 0:64]
    cb = -((xx - 32.0) ** 2 + (yy - 24.0) ** 2) / 200.0
    with_cb = predict_density(params, img, centerbias=cb)
    assert with_cb[192, 256] > with_cb[0, 0] + 5
    assert_density(predict_density(params, img, centerbias="uniform"), (384, 512))
    with pytest.raises(ValueError, match="NaN or inf"):
        predict_density(params, img, centerbias=np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="2-D"):
        predict_density(params, img, centerbias=np.zeros(5))
    with pytest.raises(ValueError, match="'uniform'"):
        predict_density(params, img, centerbias="center")


def test_bad_images_raise(params):
    with pytest.raises(ImageError):
        predict_density(params, np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ImageError):
        predict_density(params, b"garbage")


def test_sample_fixations_follow_the_density():
    log_density = np.full((4, 6), -50.0, np.float32)
    log_density[3, 5] = np.log(1 / 3.0)
    log_density[1, 2] = np.log(2 / 3.0)
    x, y = sample_fixations(log_density, 3000, jax.random.PRNGKey(0))
    assert x.shape == y.shape == (3000,)
    cells = list(zip(np.floor(y).astype(int), np.floor(x).astype(int)))
    share = sum(c == (1, 2) for c in cells) / 3000
    assert abs(share - 2 / 3) < 0.04 and all(c in {(1, 2), (3, 5)} for c in cells)


def test_sample_fixations_are_reproducible_never_land_on_zero_density_and_refuse_no_mass():
    log_density = np.array([[-np.inf, np.log(0.5)], [np.log(0.25), np.log(0.25)]])
    draws = [sample_fixations(log_density, 500, key) for key in (jax.random.PRNGKey(1), jax.random.PRNGKey(1),
                                                                 jax.random.key(1), jax.random.PRNGKey(2))]
    for x, y in draws[1:3]:  # the same key (raw or typed) draws the same fixations
        np.testing.assert_array_equal(x, draws[0][0])
        np.testing.assert_array_equal(y, draws[0][1])
    assert not np.array_equal(draws[3][0], draws[0][0])
    assert not np.any((draws[0][0] < 1) & (draws[0][1] < 1))
    assert np.all((0 <= draws[0][0]) & (draws[0][0] < 2) & (0 <= draws[0][1]) & (draws[0][1] < 2))
    for bad in (np.full((2, 2), -np.inf), np.array([[0.0, np.nan]]), np.zeros(4)):
        with pytest.raises(ValueError):
            sample_fixations(bad, 3, jax.random.PRNGKey(0))


def test_ensembles_average_in_probability(params):
    from deepgaze_jax.densities import log_mean_density

    other = init_params(ModelConfig(backbone="fake", readout_features=(1,)), jax.random.PRNGKey(3))
    images = [np.random.default_rng(4).integers(0, 256, s, dtype=np.uint8) for s in [(96, 128, 3), (70, 50, 3)]]
    ensemble = predict_density([params, other], images)
    for image, got in zip(images, ensemble):
        assert_density(got, image.shape[:2])
        members = [predict_density(params, image), predict_density(other, image)]
        assert not np.allclose(got, members[0], atol=1e-3)  # the two models do differ
    # a working-size image maps each cell to its pixels alike, so averaging on the grid = averaging per pixel
    members = [predict_density(params, images[0]), predict_density(other, images[0])]
    np.testing.assert_allclose(ensemble[0], log_mean_density(members), atol=2e-6)
    np.testing.assert_allclose(predict_density([params, params], images[0]), predict_density(params, images[0]), atol=2e-6)
    for bad in ([], [params, "model.npz"]):
        with pytest.raises(ValueError, match="list of models"):
            predict_density(bad, images[0])


def test_an_ensemble_is_the_mixture_on_the_density_grid_at_any_image_size(params):
    """Members of one config: the ensemble predicts what the one model holding both heads (`model.mixture`)
    does, also where the density is resampled to the image (70 x 50 here), since both average on the grid."""
    other = init_params(params.config, jax.random.PRNGKey(7), centerbias=params.centerbias)
    images = [np.random.default_rng(6).integers(0, 256, s, dtype=np.uint8) for s in [(96, 128, 3), (70, 50, 3)]]
    for got, want in zip(predict_density([params, other], images), predict_density(mixture([params, other]), images)):
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_members_of_other_working_sizes_are_averaged_per_pixel(params):
    from deepgaze_jax.densities import log_mean_density

    coarse = init_params(ModelConfig(backbone="fake", long_side=256), jax.random.PRNGKey(8))
    image = np.random.default_rng(9).integers(0, 256, (70, 50, 3), dtype=np.uint8)
    members = [predict_density(params, image), predict_density(coarse, image)]
    np.testing.assert_allclose(predict_density([params, coarse], image), log_mean_density(members), atol=2e-6)


def test_an_ensemble_predicts_like_the_list_of_its_members(params):
    other = init_params(ModelConfig(backbone="fake", readout_features=(1,)), jax.random.PRNGKey(3))
    image = np.random.default_rng(5).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    pair = Ensemble((params, other))
    np.testing.assert_array_equal(predict_density(pair, image), predict_density([params, other], image))
    np.testing.assert_array_equal(predict_density_without_centerbias(pair, [image])[0],
                                  predict_density([params, other], image, centerbias="uniform"))
    # nested: each single model weighs the same, so [pair, params] is (params, other, params)
    np.testing.assert_allclose(predict_density([pair, params], image),
                               predict_density([params, other, params], image), atol=2e-6)


def test_density_without_centerbias_undoes_the_models_centre_bias(params):
    img = np.random.default_rng(3).integers(0, 256, (384, 512, 3), dtype=np.uint8)
    cell = params.config.cell
    yy, xx = np.mgrid[0 : 384 // cell, 0 : 512 // cell]  # the density grid of a 384x512 image: no resampling
    log_cb = log_normalize(-((xx - xx.mean()) ** 2 + (yy - yy.mean()) ** 2) / (yy.size / 20.0))
    with_cb = params.replace(centerbias=log_cb.astype(np.float32))
    without = predict_density_without_centerbias(with_cb, img)
    assert_density(without, (384, 512))
    np.testing.assert_array_equal(without, predict_density(params, img, centerbias="uniform"))
    # softmax(s + log cb) vs softmax(s): the log ratio is log cb up to a constant, at every pixel
    ratio = predict_density(with_cb, img) - without - np.repeat(np.repeat(log_cb, cell, axis=0), cell, axis=1)
    np.testing.assert_allclose(ratio, ratio.mean(), atol=1e-3)
    assert np.ptp(predict_density(with_cb, img) - without) > 5
    ensemble = predict_density_without_centerbias([with_cb, with_cb], [img])
    np.testing.assert_allclose(ensemble[0], without, atol=1e-5)


def test_exif_orientation_gives_the_density_of_the_picture_as_shown(params, tmp_path):
    """A phone photo stored 128 wide x 96 high with orientation 6 is shown 96 wide x 128 high."""
    stored = np.random.default_rng(5).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = np.asarray(Image.open(tmp_path / "phone.jpg").transpose(Image.Transpose.ROTATE_270))
    got = predict_density(params, tmp_path / "phone.jpg")
    assert_density(got, (128, 96))
    np.testing.assert_allclose(got, predict_density(params, shown), atol=1e-5)


def test_4d_jax_array_is_a_batch_like_numpy(params):
    import jax.numpy as jnp

    batch = np.random.default_rng(6).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    got = predict_density(params, jnp.asarray(batch))
    assert isinstance(got, list) and len(got) == 2
    for out, expected in zip(got, predict_density(params, batch)):
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "template",
    [np.array([[3e38, -3e38], [0.0, 1.0]]), np.full((3, 3), 3e38), np.array([[-3e38, 0.0], [0.0, 0.0]])],
    ids=["plus-minus-3e38", "constant-3e38", "minus-3e38"],
)
def test_extreme_finite_centerbias_gives_finite_densities(params, template):
    img = np.zeros((384, 512, 3), np.uint8)
    out = predict_density(params, img, centerbias=template)
    assert_density(out, (384, 512))
    if np.ptp(template) == 0:  # a constant log density is the uniform one
        np.testing.assert_allclose(out, predict_density(params, img, centerbias="uniform"), atol=1e-5)


@pytest.mark.parametrize("value", [0, 255, None], ids=["black", "white", "random"])
def test_iie_readout_predicts_normalised_finite_densities(value):
    """The per-image LayerNorm of a constant image divides by its eps-floored std only."""
    config = ModelConfig(backbone="fake", readout_features=(8, 16, 1), readout_kind="iie")
    iie = init_params(config, jax.random.PRNGKey(1))
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8) if value is None else np.full((200, 300, 3), value, np.uint8)
    assert_density(predict_density(iie, image), image.shape[:2])
