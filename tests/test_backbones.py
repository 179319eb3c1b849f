import dataclasses

import pytest

import fake_backbone
from deepgaze_jax.backbones import BACKBONES, get_backbone, register, registered
from deepgaze_jax.model import ModelConfig


def test_builtin_backbones_are_found_by_name():
    for name in BACKBONES:
        backbone = get_backbone(name)
        assert backbone.name == name and backbone.module.startswith("deepgaze_jax.backbones.")


def test_registered_backbones_serve_model_configs():
    other = register(dataclasses.replace(fake_backbone.FAKE, name="fake_registry_test"))
    assert get_backbone("fake_registry_test") is other
    assert ModelConfig(backbone="fake_registry_test").num_channels() == 9
    assert register(other) is other  # registering the same backbone again is harmless
    assert registered()[: len(BACKBONES)] == BACKBONES and "fake_registry_test" in registered()


def test_a_taken_name_and_an_unknown_name_are_clear_errors():
    with pytest.raises(ValueError, match="already registered as 'fake'"):
        register(dataclasses.replace(fake_backbone.FAKE, taps=("fine",)))
    with pytest.raises(ValueError, match=r"unknown backbone 'nope'.*register"):
        get_backbone("nope")
