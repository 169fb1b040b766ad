"""Tiny ImageNet end to end on the shared subset (64x64, 200 classes): train a CNN for one epoch
on a few hundred images, IC-only on top, then attack -> evaluate -> latency -> grid -> report."""
from __future__ import annotations

import json

import pytest

from deepsloth.cli.main import main
from deepsloth.models import create_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_train_attack_evaluate_latency_on_tinyimagenet(tinyimagenet_root, tmp_path, capsys):
    root = str(tinyimagenet_root)
    common = ["--dataset", "tinyimagenet", "--arch", "resnet56", "--recipe", "fast", "--epochs", "1",
              "--batch-size", "32", "--train-n", "384", "--test-n", "200", "--data-root", root, "--device", "cpu"]
    assert main(["train", "--mode", "cnn", "--out", str(tmp_path / "cnn"), *common]) == 0
    assert main(["train", "--mode", "ic-only", "--from", str(tmp_path / "cnn"), "--out", str(tmp_path / "sdn"),
                 *common]) == 0
    model = create_model(tmp_path / "sdn")
    meta = model.meta
    assert meta["dataset"] == "tinyimagenet" and meta["num_classes"] == 200 and meta["input_size"] == 64
    assert meta["exits"] == 28 and len(meta["accuracy"]["per_exit"]) == 28
    capsys.readouterr()
    # a one-epoch model is barely above chance (0.5%): calibrate on 1,000 images with a loose budget
    ctx = ["--model", str(tmp_path / "sdn"), "--data-root", root, "--device", "cpu", "--calib-n", "1000",
           "--rad", "99"]
    out = tmp_path / "results"
    assert main(["attack", *ctx, "--n", "16", "--steps", "2", "--batch-size", "8", "--out", str(out), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["data"]["n"] == 16 and rec["model"]["input_size"] == 64
    assert rec["attack"]["params"]["dataset"] == "tinyimagenet"          # Tiny ImageNet defaults
    assert rec["norms"]["linf"]["max"] <= 8 / 255 + 1e-6
    assert sum(rec["rad"]["99"]["attacked"]["exit_counts"]) == 16
    assert main(["evaluate", *ctx, "--n", "16", "--inputs", rec["crafting"]["file"], "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["rad"]["99"]["attacked"]["exit_counts"] == rec["rad"]["99"]["attacked"]["exit_counts"]
    assert main(["latency", *ctx, "--n", "16", "--inputs", rec["crafting"]["file"], "--runtime-n", "4",
                 "--json"]) == 0
    lat = json.loads(capsys.readouterr().out)
    assert lat["latency_model"]["tx_bytes"] > 0 and lat["rad"]["99"]["latency_amplification"] > 0
    assert main(["grid", *ctx, "--n", "16", "--attacks", "pgd", "--out", str(out)]) == 0
    assert main(["report", str(out), "--format", "csv", "--no-figure"]) == 0
    rows = (out / "tables.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and all(",tinyimagenet,16," in r for r in rows[1:])
