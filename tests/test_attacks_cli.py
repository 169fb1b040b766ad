"""`deepsloth attack`: crafting on the right split, the saved result and record, evaluation,
and resuming a killed per-sample run (untrained ResNet-56 SDN, synthetic data: seconds)."""
from __future__ import annotations

import json

import pytest
import torch

from deepsloth.adversarial import adversarial_inputs, load_adversarial
from deepsloth.cli.main import main
from deepsloth.data import CIFAR10_CLASSES
from deepsloth.data.cache import write_dataset
from deepsloth.models import create_model
from deepsloth.models.io import save_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("attack-cli")
    g = torch.Generator().manual_seed(0)

    def split(n):
        return (torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                torch.arange(n) % 10)

    root = base / "data"
    write_dataset("cifar10", root, {"train": split(40), "test": split(12)}, CIFAR10_CLASSES, "synthetic")
    model = create_model("resnet56", "cifar10", sdn=True, seed=0)
    model_dir = base / "model"
    save_model_dir(model_dir, model, {"arch": "resnet56", "dataset": "cifar10", "mode": "sdn",
                                      "num_classes": 10, "input_size": 32})
    return {"root": root, "model": model_dir, "base": base}


def _args(setup, out, *extra):
    return ["attack", "--model", str(setup["model"]), "--data-root", str(setup["root"]),
            "--device", "cpu", "--out", str(out), *extra]


def test_per_sample_result_record_and_evaluation(setup, capsys):
    out = setup["base"] / "ds-linf"
    rc = main(_args(setup, out, "--n", "6", "--batch-size", "3", "--steps", "2", "--json"))
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    kind, tensors, record = load_adversarial(out)
    assert kind == "samples"
    assert tensors["images"].shape == (6, 3, 32, 32)
    assert torch.equal(tensors["indices"], torch.arange(6))
    assert record["attack"]["attack"] == "deepsloth" and record["attack"]["steps"] == 2
    assert record["attack"]["eps"] == pytest.approx(8 / 255) and record["seed"] == 0
    assert record["model"]["arch"] == "resnet56" and record["model"]["dataset"] == "cifar10"
    assert record["model"]["weights_sha256"] and record["package_version"]
    assert record["time_s"] >= 0 and record["data"]["n"] == 6
    assert record["norms"]["linf"]["max"] <= 8 / 255 + 1e-6
    assert record["norms"]["linf"]["max"] > 0
    # the perturbation is measured against the clean test images
    from deepsloth.data import load_dataset
    clean = load_dataset("cifar10", "test", setup["root"]).images[:6].float() / 255
    assert float((tensors["images"] - clean).abs().max()) <= 8 / 255 + 1e-6
    ev = record["evaluation"]
    assert "skipped" in ev or set(ev["rad"]) == {"5", "15"}
    if "skipped" not in ev:
        row = ev["rad"]["5"]
        assert {"clean_efficacy", "adversarial_efficacy", "efficacy_reduction", "clean_accuracy",
                "adversarial_accuracy"} <= set(row)
    assert printed["evaluation"] == ev and printed["path"].endswith(".safetensors")
    assert not (out.parent / (out.name + ".partial")).exists()
    # the evaluate command reads it back
    x, y, rec = adversarial_inputs(out, clean, torch.arange(6) % 10)
    assert x.shape == (6, 3, 32, 32)


def test_killed_per_sample_run_resumes_identically(setup, monkeypatch):
    from deepsloth.attacks import DeepSloth
    args = ("--n", "7", "--batch-size", "3", "--steps", "2", "--no-eval")
    ref = setup["base"] / "ref"
    assert main(_args(setup, ref, *args)) == 0
    _, ref_tensors, _ = load_adversarial(ref)

    out = setup["base"] / "resumed"
    calls = {"n": 0}
    original = DeepSloth.__call__

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt      # killed while crafting the second batch
        return original(self, *a, **k)

    monkeypatch.setattr(DeepSloth, "__call__", dying)
    assert main(_args(setup, out, *args)) == 130
    partial = out.parent / (out.name + ".partial")
    assert sorted(p.name for p in partial.glob("batch-*")) == ["batch-000000000.safetensors"]
    assert not out.with_suffix(".safetensors").exists()

    calls["n"] = -100                     # no more deaths; count the batches crafted now
    assert main(_args(setup, out, *args)) == 0
    assert calls["n"] == -100 + 2         # batches 3..5 and 6 only, not batch 0..2 again
    kind, tensors, record = load_adversarial(out)
    assert torch.equal(tensors["images"], ref_tensors["images"])
    assert record["craft"]["batches_resumed"] == 1 and record["craft"]["batches"] == 3
    assert not partial.exists()


def test_partial_of_another_configuration_is_discarded(setup, monkeypatch, capsys):
    from deepsloth.attacks import DeepSloth
    out = setup["base"] / "changed"
    original = DeepSloth.__call__
    state = {"n": 0}

    def dying(self, *a, **k):
        state["n"] += 1
        if state["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(DeepSloth, "__call__", dying)
    assert main(_args(setup, out, "--n", "6", "--batch-size", "3", "--steps", "1", "--no-eval")) == 130
    monkeypatch.setattr(DeepSloth, "__call__", original)
    assert main(_args(setup, out, "--n", "6", "--batch-size", "3", "--steps", "2", "--no-eval")) == 0
    assert "discarding" in capsys.readouterr().err
    _, _, record = load_adversarial(out)
    assert record["craft"]["batches_resumed"] == 0 and record["attack"]["steps"] == 2


def test_universal_and_class_universal(setup, capsys):
    out = setup["base"] / "uni"
    assert main(_args(setup, out, "--scope", "universal", "--steps", "2", "--craft-n", "8",
                      "--n", "5")) == 0
    text = capsys.readouterr().out
    assert "deepsloth (universal)" in text and "wrote" in text
    kind, tensors, record = load_adversarial(out)
    assert kind == "universal" and tensors["delta"].shape == (3, 32, 32)
    assert record["data"]["craft_split"] == "train" and record["craft"]["n_images"] == 8
    assert record["attack"]["n_images"] == 8 and record["attack"]["preset"] == "reference"
    assert record["perturbation_norms"]["linf"]["max"] <= 8 / 255 + 1e-6

    out = setup["base"] / "cls"
    assert main(_args(setup, out, "--scope", "class", "--steps", "1", "--craft-n", "2",
                      "--n", "10", "--no-eval", "--eps", "4/255")) == 0
    kind, tensors, record = load_adversarial(out)
    assert kind == "class-universal" and tensors["deltas"].shape == (10, 3, 32, 32)
    assert record["craft"]["classes_without_data"] == []
    assert torch.all(tensors["deltas"].flatten(1).abs().amax(1) > 0)
    assert record["norms"]["linf"]["max"] <= 4 / 255 + 1e-6


def test_pgd_and_uap(setup):
    out = setup["base"] / "pgd"
    assert main(_args(setup, out, "--attack", "pgd", "--n", "4", "--steps", "2", "--no-eval")) == 0
    _, tensors, record = load_adversarial(out)
    assert record["attack"]["attack"] == "pgd" and record["attack"]["step_size"] == 0.001
    out = setup["base"] / "uap"
    assert main(_args(setup, out, "--attack", "uap", "--n", "4", "--steps", "3", "--craft-n", "6",
                      "--epochs", "1", "--no-eval")) == 0
    kind, tensors, record = load_adversarial(out)
    assert kind == "universal" and record["attack"]["attack"] == "uap"
    assert record["attack"]["n_images"] == 6 and record["craft"]["passes"] == 1


@pytest.mark.parametrize("extra, message", [
    (("--attack", "pgd", "--scope", "universal"), "per-sample"),
    (("--attack", "uap", "--norm", "l2"), "l_inf"),
    (("--n", "999"), "exceeds"),
    (("--craft-n", "5"), "only applies"),
])
def test_bad_options_are_one_line_errors(setup, capsys, extra, message):
    assert main(_args(setup, setup["base"] / "bad", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
