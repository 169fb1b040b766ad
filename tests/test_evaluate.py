"""`evaluate_exits` and the `deepsloth evaluate` command (synthetic data, untrained ResNet-56 SDN)."""
from __future__ import annotations

import json

import pytest
import torch

from deepsloth.experiments.results import save_result
from deepsloth.cli.main import main
from deepsloth.data import CIFAR10_CLASSES
from deepsloth.data.cache import write_dataset
from deepsloth.exits.cost import measure_exit_costs
from deepsloth.exits.evaluate import evaluate_exits
from deepsloth.exits.forward import ExitOutputs, collect_exit_outputs
from deepsloth.metrics.efficacy import efficacy
from deepsloth.models import create_model
from deepsloth.models.io import save_model_dir

# K = 3, N = 4: at q = 0.8, IC 1 answers inputs 0 and 2, IC 2 input 1, the final exit input 3
CONF = torch.tensor([[0.9, 0.2, 0.95, 0.1], [0.5, 0.85, 0.6, 0.3], [0.7, 0.9, 0.99, 0.4]])
PRED = torch.tensor([[1, 0, 2, 3], [1, 1, 2, 0], [1, 1, 0, 3]])
LABELS = torch.tensor([1, 1, 2, 3])
COSTS = [0.25, 0.6, 1.0]


def test_evaluate_exits_by_hand():
    out = ExitOutputs(CONF, PRED, torch.zeros(3, 4))
    r = evaluate_exits(out, LABELS, COSTS, {"5": {"threshold": 0.8}, "15": 0.15})
    assert r["final_accuracy"] == 0.75 and r["per_exit_accuracy"] == [0.75, 0.75, 0.75]
    q8 = r["rad"]["5"]
    assert q8["threshold"] == 0.8 and q8["exit_counts"] == [2, 1, 1]
    assert q8["accuracy"] == 1.0                                  # 1, 1, 2 and the final 3
    assert q8["mean_cost"] == pytest.approx((0.25 * 2 + 0.6 + 1.0) / 4)
    assert q8["efficacy"] == pytest.approx(efficacy([2, 1, 1], COSTS))
    q4 = r["rad"]["15"]
    assert q4["exit_counts"] == [3, 1, 0] and q4["accuracy"] == 0.5   # inputs 1 and 3 leave too early


# ----------------------------------------------------------------------------- CLI

N = 60


def build_env(root):
    """A cifar10 cache of N synthetic test images and an untrained ResNet-56 SDN whose final
    exit is right by construction (labels = its predictions), so calibration always works;
    plus a per-sample and a universal attack result."""
    g = torch.Generator().manual_seed(0)
    x = 0.8 * torch.rand(N, 3, 1, 1, generator=g) + 0.2 * torch.rand(N, 3, 32, 32, generator=g)
    images = (x * 255).to(torch.uint8)
    model = create_model("resnet56", "cifar10", sdn=True, seed=0).eval()
    labels = collect_exit_outputs(model, images).prediction[-1]
    write_dataset("cifar10", root / "data", {"test": (images, labels)}, CIFAR10_CLASSES, "synthetic")
    meta = {"arch": "resnet56", "dataset": "cifar10", "mode": "ic-only", "num_classes": 10, "input_size": 32,
            "cost": measure_exit_costs(model, (3, 32, 32)).to_dict()}
    mdir = save_model_dir(root / "model", model, meta)
    save_result(root / "samples", "samples",
                     {"images": (images[:20].float() / 255).flip(-1), "indices": torch.arange(20),
                      "labels": labels[:20]}, {"attack": "flip"})
    save_result(root / "uni", "universal", {"delta": torch.full((3, 32, 32), 0.1)}, {"attack": "const"})
    return root, mdir


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return build_env(tmp_path_factory.mktemp("ev"))


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_evaluate_json_has_the_documented_keys(env, capsys, tmp_path):
    root, mdir = env
    rc, out, _ = run_cli(capsys, "evaluate", "--model", str(mdir), "--data-root", str(root / "data"),
                         "--rad", "50", "99", "--json", "--plot", str(tmp_path / "eec.png"),
                         "--out", str(tmp_path / "r.json"), "--device", "cpu")
    assert rc == 0
    r = json.loads(out)
    assert r == json.loads((tmp_path / "r.json").read_text())
    assert (tmp_path / "eec.png").read_bytes()[:4] == b"\x89PNG"
    assert r["format"] == "deepsloth-comparison/1" and r["cell"] == "clean"
    assert r["clean"]["final_accuracy"] == 1.0 and len(r["clean"]["per_exit_accuracy"]) == 28 and r["data"]["n"] == N
    assert set(r["rad"]) == {"50", "99"}
    for e in r["rad"].values():
        c = e["clean"]
        assert {"accuracy", "efficacy", "exit_counts", "mean_cost", "expected_latency_s"} <= set(c)
        assert len(c["exit_counts"]) == 28 and sum(c["exit_counts"]) == N
        assert 0 <= c["efficacy"] <= 1 and 0 < c["mean_cost"] <= 1 and e["attacked"] == c
    assert r["calibration"]["n"] == N and not r["calibration"]["cached"]
    assert (mdir / "thresholds.json").is_file()
    # --n: the first N images; thresholds calibrated on those same images
    rc, out, _ = run_cli(capsys, "evaluate", "--model", str(mdir), "--data-root", str(root / "data"),
                         "--rad", "99", "--n", "30", "--json")
    r30 = json.loads(out)
    assert rc == 0 and r30["data"]["n"] == 30 and r30["calibration"]["n"] == 30


def test_evaluate_text_report_and_reuse(env, capsys):
    root, mdir = env
    args = ["evaluate", "--model", str(mdir), "--data-root", str(root / "data"), "--rad", "50", "99"]
    run_cli(capsys, *args)
    rc, out, _ = run_cli(capsys, *args)
    assert rc == 0
    assert "final-exit accuracy" in out and "RAD   50%" in out and "efficacy" in out
    assert "reused" in out


@pytest.mark.parametrize("name,n", [("samples.safetensors", 20), ("uni", N), ("uni.json", N)])
def test_evaluate_attack_results(env, capsys, name, n):
    root, mdir = env
    rc, out, err = run_cli(capsys, "evaluate", "--model", str(mdir), "--data-root", str(root / "data"),
                           "--rad", "99", "--inputs", str(root / name), "--json", "--n", str(n), "--calib-n", str(N))
    assert rc == 0, err
    r = json.loads(out)
    assert r["data"]["n"] == n and r["crafting"]["file"] == str(root / name)
    assert r["calibration"]["n"] == N          # thresholds from the clean test set, held fixed
    e = r["rad"]["99"]
    assert sum(e["attacked"]["exit_counts"]) == n and "efficacy_reduction" in e
    # a result of another size than the selected inputs is an error, not a silent mismatch
    if name.startswith("samples"):
        rc, _, err = run_cli(capsys, "evaluate", "--model", str(mdir), "--data-root", str(root / "data"),
                             "--rad", "99", "--inputs", str(root / name))
        assert rc == 2 and "holds 20 inputs but 60" in err


def test_evaluate_errors_are_one_line(env, capsys):
    root, mdir = env
    rc, _, err = run_cli(capsys, "evaluate", "--model", str(mdir), "--data-root", str(root / "data"),
                         "--n", "1000")
    assert rc == 2 and "exceeds the 60 available" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli(capsys, "evaluate", "--model", str(mdir), "--data-root", str(root / "data"),
                         "--inputs", str(root / "missing"))
    assert rc == 2 and "attack result not found" in err
    rc, _, err = run_cli(capsys, "evaluate", "--model", str(root / "nope"), "--data-root", str(root / "data"))
    assert rc == 2 and "no model directory or zoo model" in err
    # this untrained model cannot keep 95% of its accuracy with early exits: a clear error
    rc, _, err = run_cli(capsys, "evaluate", "--model", str(mdir), "--data-root", str(root / "data"))
    assert rc == 2 and "no threshold qualifies for RAD 5%" in err and "best reached is" in err
