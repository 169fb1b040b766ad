"""`deepsloth attack`: crafting on the right split, the saved result and record, and the
comparison it prints (untrained ResNet-56 SDN, synthetic data whose labels are the model's own
predictions: seconds). Resuming and content naming are tested in test_experiments.py."""
from __future__ import annotations

import json

import pytest
import torch

from deepsloth.experiments.results import apply_result, read_result
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

    model = create_model("resnet56", "cifar10", sdn=True, seed=0).eval()

    def split(n):
        x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        with torch.no_grad():
            return x, model(x.float() / 255)[-1].argmax(1)

    root = base / "data"
    write_dataset("cifar10", root, {"train": split(40), "test": split(12)}, CIFAR10_CLASSES, "synthetic")
    model_dir = base / "model"
    save_model_dir(model_dir, model, {"arch": "resnet56", "dataset": "cifar10", "mode": "sdn",
                                      "num_classes": 10, "input_size": 32})
    return {"root": root, "model": model_dir, "base": base}


def _args(setup, out, *extra):
    return ["attack", "--model", str(setup["model"]), "--data-root", str(setup["root"]),
            "--device", "cpu", "--out", str(out), *extra]


def _result(out, cell):
    folder = out / "model" / "adversarial"
    (path,) = list(folder.glob(f"{cell}-*.safetensors"))
    return read_result(path)


def test_per_sample_result_record_and_comparison(setup, capsys):
    out = setup["base"] / "ds-linf"
    rc = main(_args(setup, out, "--n", "6", "--batch-size", "3", "--steps", "2", "--json"))
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    kind, tensors, record = _result(out, "deepsloth-linf-sample")
    assert kind == "samples"
    assert tensors["images"].shape == (6, 3, 32, 32)
    assert torch.equal(tensors["indices"], torch.arange(6))
    assert record["spec"]["attack"] == "deepsloth" and record["spec"]["params"]["steps"] == 2
    assert record["spec"]["params"]["eps"] == pytest.approx(8 / 255) and record["seed"] == 0
    assert record["model"]["arch"] == "resnet56" and record["model"]["dataset"] == "cifar10"
    assert record["model"]["weights_sha256"] and record["package_version"]
    assert record["seconds"] >= 0 and record["data"]["n"] == 6 and record["batches"] == 2
    assert 0 < record["norms"]["linf"]["max"] <= 8 / 255 + 1e-6
    # the perturbation is measured against the clean test images
    from deepsloth.data import load_dataset
    clean = load_dataset("cifar10", "test", setup["root"]).images[:6].float() / 255
    assert float((tensors["images"] - clean).abs().max()) <= 8 / 255 + 1e-6
    assert printed["format"] == "deepsloth-comparison/1" and set(printed["rad"]) == {"5", "15"}
    row = printed["rad"]["5"]
    assert {"threshold", "clean", "attacked", "efficacy_reduction", "latency_amplification"} <= set(row)
    assert printed["clean"]["final_accuracy"] == 1.0 and printed["crafting"]["file"].endswith(".safetensors")
    assert not list((out / "model" / "adversarial").glob("*.partial"))
    kind, tensors, rec = read_result(printed["crafting"]["file"])
    x = apply_result(kind, tensors, clean, torch.arange(6) % 10)
    assert kind == "samples" and x.shape == (6, 3, 32, 32) and torch.equal(x, tensors["images"])


def test_universal_and_class_universal(setup, capsys):
    out = setup["base"] / "uni"
    assert main(_args(setup, out, "--scope", "universal", "--steps", "2", "--craft-n", "8", "--n", "5")) == 0
    text = capsys.readouterr().out
    assert "DeepSloth (universal, l_inf)" in text and "wrote" in text
    kind, tensors, record = _result(out, "deepsloth-linf-universal")
    assert kind == "universal" and tensors["delta"].shape == (3, 32, 32)
    assert record["craft_pool"]["split"] == "train" and record["craft"]["n_images"] == 8
    assert record["spec"]["params"]["n_images"] == 8 and record["spec"]["params"]["preset"] == "reference"
    assert record["perturbation_norms"]["linf"]["max"] <= 8 / 255 + 1e-6

    out = setup["base"] / "cls"
    assert main(_args(setup, out, "--scope", "class", "--steps", "1", "--craft-n", "2",
                      "--n", "10", "--eps", "4/255")) == 0
    kind, tensors, record = _result(out, "deepsloth-linf-class")
    assert kind == "class-universal" and tensors["deltas"].shape == (10, 3, 32, 32)
    missing = record["craft"]["classes_without_data"]     # labels are the untrained model's predictions
    present = sorted(set(range(10)) - set(missing))
    assert present and torch.all(tensors["deltas"][present].flatten(1).abs().amax(1) > 0)
    assert torch.all(tensors["deltas"][missing] == 0)
    assert record["norms"]["linf"]["max"] <= 4 / 255 + 1e-6


def test_pgd_and_uap(setup):
    out = setup["base"] / "pgd"
    assert main(_args(setup, out, "--attack", "pgd", "--n", "4", "--steps", "2")) == 0
    _, tensors, record = _result(out, "pgd-linf-sample")
    assert record["spec"]["attack"] == "pgd" and record["spec"]["params"]["step_size"] == 0.001
    out = setup["base"] / "uap"
    assert main(_args(setup, out, "--attack", "uap", "--n", "4", "--steps", "3", "--craft-n", "6",
                      "--epochs", "1")) == 0
    kind, tensors, record = _result(out, "uap-linf-universal")
    assert kind == "universal" and record["spec"]["attack"] == "uap"
    assert record["spec"]["params"]["n_images"] == 6 and record["craft"]["passes"] == 1


@pytest.mark.parametrize("extra, message", [
    (("--attack", "pgd", "--scope", "universal"), "supports scope sample"),
    (("--attack", "uap", "--norm", "l2"), "supports norm linf"),
    (("--n", "999"), "exceeds"),
    (("--craft-n", "5"), "takes no option n_images"),
    (("--attack", "uap", "--step-size", "0.1"), "uap takes no --step-size"),
])
def test_bad_options_are_one_line_errors(setup, capsys, extra, message):
    out = setup["base"] / "bad"
    assert main(_args(setup, out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() or not any(out.rglob("*.safetensors"))


def test_amp_auto_without_native_bf16_is_the_fp32_run(setup, capsys, monkeypatch):
    """`--amp auto` on a CPU without native bf16 crafts in fp32: the same spec id, the same file and the
    same adversarial images as giving no --amp at all (and the record carries no amp)."""
    import deepsloth.precision as precision

    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: False)
    runs = {}
    for name, extra in (("plain", ()), ("auto", ("--amp", "auto"))):
        out = setup["base"] / f"amp-{name}"
        assert main(_args(setup, out, "--n", "4", "--batch-size", "2", "--steps", "2", "--json", *extra)) == 0
        rec = json.loads(capsys.readouterr().out)
        runs[name] = (rec, _result(out, "deepsloth-linf-sample"))
    (plain, (_, a, _)), (auto, (_, b, rec_b)) = runs["plain"], runs["auto"]
    assert auto["attack_id"] == plain["attack_id"] and "amp" not in auto["attack"]["params"]
    assert torch.equal(a["images"], b["images"])
