import jax
import pytest

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax.dataset_training import load_init
from deepgaze_jax.model import ModelConfig, init_params, save_model

FAKE = ModelConfig(backbone="fake", readout_features=(8, 16, 1))


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "init.npz"
    save_model(init_params(FAKE, jax.random.PRNGKey(0)), path)
    return path


def test_a_matching_model_is_the_start(saved):
    assert load_init(saved, FAKE).config == FAKE


@pytest.mark.parametrize("other, field", [
    (ModelConfig(backbone="fake", readout_features=(8, 16, 1), readout_kind="iie"), "readout_kind"),
    (ModelConfig(backbone="fake", readout_features=(8, 16, 1), taps=("fine",)), "resolved_taps"),
    (ModelConfig(backbone="fake"), "readout_features"),
    (ModelConfig(backbone="fake", readout_features=(8, 16, 1), cell=8), "cell"),
])
def test_a_model_of_another_readout_taps_or_grid_is_refused_naming_the_field(saved, other, field):
    with pytest.raises(ValueError, match=f"differs from this run in {field}"):
        load_init(saved, other)


def test_an_ensemble_name_is_refused_before_loading_anything():
    with pytest.raises(ValueError, match="ensemble of 2 models .lite0\\+lite2.; --init takes one model"):
        load_init("lite0+lite2", FAKE)
