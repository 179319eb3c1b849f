"""The evaluate command on the generated NUS-layout dataset (`nus_dataset`, conftest)."""

import argparse
import json

import numpy as np
import pytest

from deepgaze_jax import evaluate_cli


def parse(argv):
    parser = argparse.ArgumentParser()
    evaluate_cli.add_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli_writes_report(nus_dataset, tmp_path, capsys):
    out = tmp_path / "report" / "report.json"
    args = parse([
        "evaluate", "--stimuli", str(nus_dataset / "stimuli"), "--fixations", str(nus_dataset / "fixations.mat"),
        "--model", "centerbias", "--out", str(out), "--save-centerbias", str(tmp_path / "cb.npz"), "--no-progress",
    ])  # fmt: skip
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "goldstandard" in printed and "ll_bits" in printed

    report = json.loads(out.read_text())
    assert report["num_images"] == 4 and report["num_fixations"] == 4 * 3 * 6 - 5 - 6
    assert report["mode"] == "paper" and report["model"] == "centerbias"
    assert list(report["scores"]) == ["uniform", "centerbias", "goldstandard"]
    keys = {"ll_bits", "ll_bits_imgavg", "ig_bits", "ig_explained_pct", "auc", "auc_imgavg", "auc_judd", "sauc",
            "nss", "cc", "kl_nats", "sim", "baseline_ll_bits", "gold_ll_bits"}  # fmt: skip
    for name in ("uniform", "centerbias"):
        assert keys <= set(report["scores"][name])
        assert all(np.isfinite(v) for v in report["scores"][name].values())
    assert report["scores"]["uniform"]["ll_bits"] == pytest.approx(0.0, abs=1e-6)
    assert report["scores"]["uniform"]["auc"] == pytest.approx(0.5)
    gold = report["scores"]["goldstandard"]
    assert gold["ll_bits"] > report["scores"]["centerbias"]["ll_bits"] > 0  # observers agree on each image
    assert gold["ig_explained_pct"] == 100.0
    assert report["scores"]["centerbias"]["ig_bits"] == pytest.approx(0.0, abs=1e-9)
    assert set(report["centerbias_fit"]) == {"bandwidth_rel", "uniform_weight"}
    assert set(report["goldstandard_fit"]) == {"bandwidth_rel_long_side", "kde_weight", "centerbias_weight", "uniform_weight"}
    assert report["per_image"]["image"] == [f"img{i}.jpg" for i in range(4)]
    assert len(report["per_image"]["centerbias"]["auc"]) == 4 and len(report["per_image"]["goldstandard"]["ll_bits"]) == 4
    assert (tmp_path / "cb.npz").exists()
