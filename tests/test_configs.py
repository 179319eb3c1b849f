"""Experiment configurations: each file reproduces its README row's flags; --config and the seeds."""

import importlib
from pathlib import Path

import pytest

from deepgaze_jax.training import TrainConfig
from experiments import configs, crossval_mit1003, ensemble_mit1003


@pytest.mark.parametrize("name", configs.NAMES)
def test_every_config_loads_and_names_its_run_command(name):
    experiment = configs.get(name)
    assert isinstance(experiment.training, TrainConfig) and experiment.folds >= 2
    doc = importlib.import_module(f"experiments.configs.{name}").__doc__
    assert f"--config {name}" in doc and "python -m experiments." in doc
    for member in experiment.members:
        assert configs.get(member).fold_seed == experiment.fold_seed and configs.get(member).folds == experiment.folds
        assert configs.get(member).stopping == experiment.stopping


@pytest.mark.parametrize("name, flags", [
    ("lite0", ["--backbone", "efficientnet_lite0", "--no-pretrain", "--workdir", "runs/crossval", "--stopping", "heldout"]),
    ("lite2", ["--backbone", "efficientnet_lite2", "--no-pretrain", "--workdir", "runs/crossval_lite2",
               "--stopping", "heldout"]),
])
def test_config_equals_the_readme_flags(name, flags):
    by_config, by_flags = crossval_mit1003.parse(["--config", name]), crossval_mit1003.parse(flags)
    for args in (by_config, by_flags):
        assert configs.model_config(args.backbone, args.readout) == configs.get(name).model
        assert configs.train_config(args) == configs.get(name).training
    for key in ("workdir", "folds", "fold_seed", "init_seed", "no_pretrain", "init", "stopping"):
        assert getattr(by_config, key) == getattr(by_flags, key), key


def test_seeds_default_to_todays_and_separate():
    assert (crossval_mit1003.parse(["--no-pretrain"]).fold_seed, crossval_mit1003.parse(["--no-pretrain"]).init_seed) == (0, 0)
    both = crossval_mit1003.parse(["--no-pretrain", "--seed", "3"])
    assert (both.fold_seed, both.init_seed, configs.train_config(both).seed) == (3, 3, 3)
    apart = crossval_mit1003.parse(["--config", "lite0", "--seed", "3", "--init-seed", "7"])
    assert (apart.fold_seed, apart.init_seed, configs.train_config(apart).seed) == (3, 7, 7)


def test_explicit_flags_win_over_the_config():
    args = crossval_mit1003.parse(["--config", "lite0", "--backbone", "efficientnet_lite2", "--weight-decay", "0"])
    assert args.backbone == "efficientnet_lite2" and configs.train_config(args).weight_decay == 0
    assert args.workdir == Path("runs/crossval")


def test_ensemble_config_supplies_the_member_runs():
    args = ensemble_mit1003.parse(["--config", "ensemble"])
    assert args.runs == [Path("runs/crossval"), Path("runs/crossval_lite2")] and args.workdir == Path("runs/ensemble")
    assert ensemble_mit1003.parse(["a", "b"]).runs == [Path("a"), Path("b")]


def test_a_run_needs_a_start_or_a_config_and_unknown_configs_fail():
    with pytest.raises(SystemExit):
        crossval_mit1003.parse([])
    with pytest.raises(ValueError, match="unknown experiment config"):
        configs.get("nope")
