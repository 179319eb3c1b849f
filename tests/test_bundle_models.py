"""`experiments.bundle_models` on tiny finished crossvalidations (fake backbone) and its default rule."""

import json
import shutil
from pathlib import Path

import pytest

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax import model
from deepgaze_jax.model import Ensemble, load_model
from experiments import bundle_models, crossval_mit1003, ensemble_mit1003
from test_experiments import common_args, mit_root  # noqa: F401  (mit_root: a fixture)


@pytest.fixture
def assets(tmp_path, monkeypatch):
    """An empty assets folder in place of the package's, and the default lite0+lite2."""
    monkeypatch.setattr(model, "ASSETS", tmp_path / "assets")
    monkeypatch.setattr(model, "DEFAULT_MODEL", "lite0+lite2")
    return tmp_path / "assets"


@pytest.fixture
def runs(tmp_path, mit_root):  # noqa: F811
    """A finished 3-fold crossvalidation "lite0", its copy "lite2" and their ensemble "lite0+lite2"."""
    workdirs = {name: tmp_path / "runs" / name for name in ("lite0", "lite2", "ensemble")}
    crossval_mit1003.main(common_args(tmp_path) + ["--no-pretrain", "--data-dir", str(mit_root), "--folds", "3",
                                                   "--workdir", str(workdirs["lite0"])])
    shutil.copytree(workdirs["lite0"], workdirs["lite2"])
    ensemble_mit1003.main([str(workdirs["lite0"]), str(workdirs["lite2"]), "--data-dir", str(mit_root),
                           "--workdir", str(workdirs["ensemble"]), "--cache-dir", str(tmp_path / "cache")])
    return {"lite0": workdirs["lite0"], "lite2": workdirs["lite2"], "lite0+lite2": workdirs.pop("ensemble")}


def pairs(runs) -> list[str]:
    return [f"{name}={workdir}" for name, workdir in runs.items()]


def test_bundles_runs_with_their_card_and_checks_the_default_on_costs(runs, assets, tmp_path, capsys, monkeypatch):
    refuses_bad_sources(runs, tmp_path)
    assert not assets.exists()  # nothing written
    card = bundle_models.main(pairs(runs))
    check_card(card, runs, assets, capsys.readouterr().out)
    written = (assets / bundle_models.CARD_NAME).read_bytes()
    costs = write_costs(tmp_path, {"lite0": 70.0, "lite2": 400.0, "lite0+lite2": 301.0})
    with pytest.raises(SystemExit, match="the rule picks 'lite0'.*set DEFAULT_MODEL = 'lite0'"):
        bundle_models.main(pairs(runs) + ["--costs", str(costs)])  # only lite0 costs at most 300 ms
    assert (assets / bundle_models.CARD_NAME).read_bytes() == written
    monkeypatch.setattr(bundle_models, "PREFERRED", "lite0+lite2")  # the rule's ensemble, within the budget
    costs = write_costs(tmp_path, {"lite0": 70.0, "lite2": 80.0, "lite0+lite2": 150.0})
    card = bundle_models.main(pairs(runs) + ["--costs", str(costs)])
    assert card["models"]["lite0+lite2"]["cost"] == {"ms_per_1024x768_image": 150.0, "machine": "test machine",
                                                     "command": "benchmark"}
    assert "| 150 | inner |" in capsys.readouterr().out


def write_costs(tmp_path, ms_per_image: dict) -> Path:
    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"ms_per_image": ms_per_image, "machine": "test machine", "command": "benchmark"}))
    return path


def check_card(card: dict, runs: dict, assets: Path, out: str) -> None:
    """The files copied and loadable by name; the card's figures those of the runs' reports; its table printed."""
    for name in ("lite0", "lite2"):
        assert (assets / model.BUNDLED_MODELS[name]).read_bytes() == (runs[name] / "mixture.npz").read_bytes()
    assert not list(assets.glob(".*tmp"))
    default = load_model()
    assert isinstance(default, Ensemble) and [m.num_components for m in default] == [3, 3]
    assert json.loads((assets / bundle_models.CARD_NAME).read_text()) == card
    assert card["default"] == "lite0+lite2" and list(card["models"]) == ["lite0", "lite2", "lite0+lite2"]
    for name, entry in card["models"].items():
        report = json.loads((runs[name] / "report.json").read_text())
        assert entry["heldout"]["all_images"] == {k: report["overall"][k] for k in bundle_models.SCORES}
        assert entry["heldout"]["paper_subset_1024x768"]["num_images"] == 2
        assert entry["stopping"] == "inner" and entry["source"] == str(runs[name].resolve())
        assert "cost" not in entry
    assert card["models"]["lite0+lite2"]["backbones"] == ["fake", "fake"]
    assert card["models"]["lite0+lite2"]["command"] == (
        f"python -m experiments.ensemble_mit1003 {runs['lite0']} {runs['lite2']} --workdir {runs['lite0+lite2']}")
    ensemble_ig = card["models"]["lite0+lite2"]["heldout"]["all_images"]["ig_explained_pct"]
    assert f"| **lite0+lite2 (default)** | fake + fake | {ensemble_ig:.1f} / " in out
    assert "| lite0 | fake |" in out and "cost not checked" in out


def refuses_bad_sources(runs: dict, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="gets no figures"):
        bundle_models.main([f"lite0={runs['lite0']}", f"lite2={runs['lite2']}"])
    with pytest.raises(SystemExit, match="is not the ensemble of lite2\\+lite0's runs"):
        bundle_models.main([f"lite0={runs['lite0']}", f"lite2={runs['lite2']}", f"lite2+lite0={runs['lite0+lite2']}"])
    with pytest.raises(SystemExit, match="bundle \\['lite2'\\] too"):
        bundle_models.main([f"lite0={runs['lite0']}", f"lite0+lite2={runs['lite0+lite2']}"])
    with pytest.raises(SystemExit, match="report.json is missing: finish the run"):
        bundle_models.main([f"lite0={tmp_path}", f"lite2={runs['lite2']}", f"lite0+lite2={runs['lite0+lite2']}"])


def test_sources_parse_names_and_config_workdirs(tmp_path):
    assert bundle_models.parse(["lite0=a", "lite0+lite1=b"]).sources == {"lite0": Path("a"), "lite0+lite1": Path("b")}
    sources = bundle_models.parse(["--runs-dir", str(tmp_path)]).sources
    assert sources == {"lite0": tmp_path / "crossval_lite0_taps_osie_eye_x6", "lite1": tmp_path / "crossval_lite1_taps_osie_eye_x6",
                       "lite2": tmp_path / "crossval_lite2_taps_osie_eye_x6", "lite0+lite1+lite2": tmp_path / "ensemble_taps_osie_eye_x6"}
    both = bundle_models.parse(["lite0+lite2=e", "lite0=a", "--runs-dir", str(tmp_path)]).sources
    assert both == {**sources, "lite0": Path("a"), "lite0+lite2": Path("e")}
    for bad in (["lite9=a"], ["default=a"], ["lite0"], ["lite0="]):
        with pytest.raises(SystemExit):
            bundle_models.parse(bad)


def test_rule_prefers_the_three_backbones_within_budget_else_the_most_backbones_that_fit_and_never_scores():
    def entry(ig, ms):
        return {"heldout": {"all_images": {"ig_explained_pct": ig}}, "cost": {"ms_per_1024x768_image": ms}}

    entries = {"lite0": entry(78.0, 69.0), "lite2": entry(80.0, 80.0), "lite0+lite2": entry(83.0, 250.0),
               "lite1+lite2": entry(85.0, 290.0), "lite0+lite1": entry(84.0, 301.0), bundle_models.PREFERRED: entry(84.0, 300.0)}
    assert bundle_models.choose_default(entries) == bundle_models.PREFERRED
    entries[bundle_models.PREFERRED] = entry(90.0, 300.5)
    assert bundle_models.choose_default(entries) == "lite0+lite2"  # the cheaper pair, though another scores higher
    entries["lite0+lite2"] = entry(83.0, 295.0)
    assert bundle_models.choose_default(entries) == "lite1+lite2"
    assert bundle_models.choose_default({"lite0": entry(70.0, 60.0), "lite2": entry(90.0, 80.0)}) == "lite0"
    with pytest.raises(ValueError, match="no bundled name costs at most 300"):
        bundle_models.choose_default({"lite2": entry(80.0, 400.0)})


def test_the_benchmarks_costs_are_what_bundling_reads(tmp_path):
    from benchmarks.inference import write_costs

    write_costs(tmp_path / "costs.json", {"lite0": 69.0}, {"lite0": 120.0}, "a machine")
    costs = bundle_models.read_costs(tmp_path / "costs.json")
    entries = {"lite0": {"heldout": {}}, "lite2": {"heldout": {}}}
    bundle_models.add_costs(entries, costs)
    assert entries["lite0"]["cost"]["ms_per_1024x768_image"] == 69.0 and entries["lite0"]["cost"]["machine"] == "a machine"
    assert entries["lite0"]["cost"]["command"].startswith("python -m benchmarks.inference") and "cost" not in entries["lite2"]
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="no 'ms_per_image'"):
        bundle_models.read_costs(tmp_path / "other.json")


def test_recost_puts_new_costs_into_the_installed_card_and_checks_the_default(assets, tmp_path, capsys):
    entry = {"backbones": ["fake"], "heldout": {"all_images": {"ig_explained_pct": 80.0}}, "stopping": "inner",
             "command": "made"}
    card = {"format": bundle_models.CARD_FORMAT, "default": "lite0+lite2",
            "models": {"lite0": dict(entry), "lite0+lite2": dict(entry, cost={"ms_per_1024x768_image": 350.0})}}
    assets.mkdir()
    (assets / bundle_models.CARD_NAME).write_text(json.dumps(card))
    costs = write_costs(tmp_path, {"lite0": 90.0, "lite0+lite2": 310.0})
    with pytest.raises(SystemExit, match="the rule picks 'lite0'"):  # lite0+lite2 is 1 backbone too many for 300 ms
        bundle_models.main(["--recost", "--costs", str(costs)])
    assert json.loads((assets / bundle_models.CARD_NAME).read_text()) == card  # nothing written
    costs = write_costs(tmp_path, {"lite0": 90.0, "lite0+lite2": 180.0})
    written = bundle_models.main(["--recost", "--costs", str(costs)])
    assert json.loads((assets / bundle_models.CARD_NAME).read_text()) == written
    assert written["models"]["lite0+lite2"]["cost"]["ms_per_1024x768_image"] == 180.0
    assert written["models"]["lite0"]["heldout"] == entry["heldout"] and "| 180 | inner |" in capsys.readouterr().out
    for argv in (["--recost"], ["--recost", "--costs", str(costs), "lite0=somewhere"]):
        with pytest.raises(SystemExit):
            bundle_models.parse(argv)


def test_made_by_gives_back_the_command_with_its_inits():
    one = {"config": "lite0_taps_osie", "init": "p/model.npz", "workdir": "w"}
    many = {**one, "init": ["p0/model.npz", "p1/model.npz"]}
    assert bundle_models.made_by(one) == "python -m experiments.crossval_mit1003 --config lite0_taps_osie --init p/model.npz --workdir w"
    assert bundle_models.made_by(many).endswith("--init p0/model.npz p1/model.npz --workdir w")
    pool = {"pool_of": ["a", "b"], "workdir": "w", "cache_dir": "c"}
    assert bundle_models.made_by(pool) == "python -m experiments.pool_instances a b --workdir w"
