"""Experiment configurations: each file reproduces its README row's flags; --config and the seeds."""

import dataclasses
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
    ("lite0", ["--backbone", "efficientnet_lite0", "--no-pretrain", "--workdir", "runs/crossval", "--stopping", "heldout",
               "--line-search", "zoom"]),
    ("lite2", ["--backbone", "efficientnet_lite2", "--no-pretrain", "--workdir", "runs/crossval_lite2",
               "--stopping", "heldout", "--line-search", "zoom"]),
    ("lite1_inner", ["--backbone", "efficientnet_lite1", "--no-pretrain", "--workdir", "runs/crossval_lite1_inner",
                     "--stopping", "inner"]),
    ("lite0_iie", ["--backbone", "efficientnet_lite0", "--readout", "iie", "--no-pretrain", "--workdir",
                   "runs/crossval_lite0_iie", "--stopping", "inner"]),
    ("lite0_taps", ["--backbone", "efficientnet_lite0", "--taps", "block8_depthwise,block10_depthwise,block14_project",
                    "--no-pretrain", "--workdir", "runs/crossval_lite0_taps", "--stopping", "inner"]),
    ("lite0_iie_taps", ["--backbone", "efficientnet_lite0", "--readout", "iie", "--taps",
                        "block8_depthwise,block10_depthwise,block14_project", "--no-pretrain", "--workdir",
                        "runs/crossval_lite0_iie_taps", "--stopping", "inner"]),
    ("lite1_taps", ["--backbone", "efficientnet_lite1", "--taps", "block12_depthwise,block14_depthwise,block19_project",
                    "--no-pretrain", "--workdir", "runs/crossval_lite1_taps", "--stopping", "inner"]),
    ("lite2_taps", ["--backbone", "efficientnet_lite2", "--taps", "block12_depthwise,block14_depthwise,block19_project",
                    "--no-pretrain", "--workdir", "runs/crossval_lite2_taps", "--stopping", "inner"]),
    ("lite1_taps_osie", ["--backbone", "efficientnet_lite1", "--taps", "block12_depthwise,block14_depthwise,block19_project",
                         "--init", "runs/pretrain_osie_lite1_taps/model.npz", "--workdir", "runs/crossval_lite1_taps_osie",
                         "--stopping", "inner"]),
    ("lite2_taps_osie_x3", ["--backbone", "efficientnet_lite2", "--taps",
                            "block12_depthwise,block14_depthwise,block19_project", "--init",
                            "runs/pretrain_osie_lite2_taps/model.npz", "runs/pretrain_osie_lite2_taps_seed1/model.npz",
                            "runs/pretrain_osie_lite2_taps_seed2/model.npz", "--seeds", "3", "--workdir",
                            "runs/crossval_lite2_taps_osie_x3", "--stopping", "inner"]),
    ("lite1_taps_osie_eye_x3", ["--backbone", "efficientnet_lite1", "--taps",
                                "block12_depthwise,block14_depthwise,block19_project", "--init",
                                "runs/pretrain_osie_eye_lite1_taps/model.npz",
                                "runs/pretrain_osie_eye_lite1_taps_seed1/model.npz",
                                "runs/pretrain_osie_eye_lite1_taps_seed2/model.npz", "--seeds", "3", "--workdir",
                                "runs/crossval_lite1_taps_osie_eye_x3", "--stopping", "inner"]),
    ("lite0_taps_osie_eye_x3b", ["--backbone", "efficientnet_lite0", "--taps",
                                 "block8_depthwise,block10_depthwise,block14_project", "--init",
                                 *(f"runs/pretrain_osie_eye_lite0_taps_seed{i}/model.npz" for i in (3, 4, 5)),
                                 "--seeds", "3", "--workdir", "runs/crossval_lite0_taps_osie_eye_x3b", "--stopping", "inner"]),
])
def test_config_equals_the_readme_flags(name, flags):
    by_config, by_flags = crossval_mit1003.parse(["--config", name]), crossval_mit1003.parse(flags)
    for args in (by_config, by_flags):
        assert configs.model_config_of(args) == configs.get(name).model
        assert configs.train_config(args) == configs.get(name).training
    for key in ("workdir", "folds", "fold_seed", "init_seed", "no_pretrain", "init", "stopping", "seeds"):
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
    taps = ensemble_mit1003.parse(["--config", "ensemble_taps"])
    assert taps.runs == [Path(f"runs/crossval_lite{n}_taps") for n in range(3)]


def test_dtype_flag_is_auto_by_default_and_names_a_dtype_otherwise():
    from deepgaze_jax.batched_training import dtype_of_flag
    assert crossval_mit1003.parse(["--config", "lite0_inner"]).dtype == "auto"
    assert dtype_of_flag(crossval_mit1003.parse(["--config", "lite0_inner", "--dtype", "float32"]).dtype) == "float32"
    with pytest.raises(ValueError, match="--dtype must be one of auto, float32, bfloat16"):
        dtype_of_flag("float16")


def test_a_run_needs_a_start_or_a_config_and_unknown_configs_fail():
    with pytest.raises(SystemExit):
        crossval_mit1003.parse([])
    with pytest.raises(ValueError, match="unknown experiment config"):
        configs.get("nope")


@pytest.mark.parametrize("name, base, readout_kind, channels", [
    ("lite0_iie", "lite0_inner", "iie", 432), ("lite0_taps", "lite0_inner", "deepgaze2", 1344),
    ("lite0_iie_taps", "lite0_inner", "iie", 1344), ("lite1_taps", "lite1_inner", "deepgaze2", 1536),
    ("lite2_taps", "lite2_inner", "deepgaze2", 1648)])
def test_candidates_differ_from_their_inner_config_only_in_readout_and_taps(name, base, readout_kind, channels):
    base, candidate = configs.get(base), configs.get(name)
    assert candidate.model.readout_kind == readout_kind and candidate.model.num_channels() == channels
    assert candidate.model.grid_stride() == 16
    assert dataclasses.replace(candidate.model, taps=None, readout_kind="deepgaze2",
                               readout_features=base.model.readout_features) == base.model
    assert dataclasses.replace(candidate, model=base.model, workdir=base.workdir) == base
    assert f"{channels} channels" in importlib.import_module(f"experiments.configs.{name}").__doc__


def test_flag_defaults_carry_readout_and_taps():
    defaults = configs.flag_defaults(configs.get("lite0_iie_taps"))
    assert defaults["readout"] == "iie" and defaults["taps"] == ("block8_depthwise", "block10_depthwise", "block14_project")
    assert configs.flag_defaults(configs.get("lite0_inner"))["taps"] is None


def test_taps_flag_refuses_unknown_taps_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        crossval_mit1003.parse(["--no-pretrain", "--taps", "stage5,block10_dw"])
    assert "unknown taps ['block10_dw'] of efficientnet_lite0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="block10_depthwise"):
        configs.model_config("efficientnet_lite0", "paper", ("block99",))


def test_an_explicit_no_pretrain_wins_over_the_configs_init():
    assert crossval_mit1003.parse(["--config", "lite0_taps_osie"]).init == (Path("runs/pretrain_osie_lite0_taps/model.npz"),)
    args = crossval_mit1003.parse(["--config", "lite0_taps_osie", "--no-pretrain"])
    assert args.init is None and args.no_pretrain


def test_init_takes_one_model_per_instance():
    args = crossval_mit1003.parse(["--init", "a.npz", "b.npz", "c.npz", "--seeds", "3"])
    assert args.init == (Path("a.npz"), Path("b.npz"), Path("c.npz")) and not args.no_pretrain
    assert configs.init_argument(args.init) == ["a.npz", "b.npz", "c.npz"]
    assert configs.init_argument(args.init[:1]) == "a.npz"


@pytest.mark.parametrize("backbone", ["lite0", "lite1", "lite2"])
def test_a_pool_config_is_its_two_runs_instances(backbone):
    pool, runs = configs.get(f"{backbone}_taps_osie_eye_x6"), [configs.get(m) for m in configs.get(f"{backbone}_taps_osie_eye_x6").members]
    assert [m for m in pool.members] == [f"{backbone}_taps_osie_eye_x3", f"{backbone}_taps_osie_eye_x3b"]
    assert all(run.model == pool.model and run.training == pool.training for run in runs)
    assert pool.init == runs[0].init + runs[1].init and pool.seeds == 6 == len(set(pool.init))
