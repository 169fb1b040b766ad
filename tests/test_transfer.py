"""Transferability building blocks: per-class data fractions, class subsets (re-indexed, and used by
evaluation), the scenario-2 subset rule, and a transfer record with both models and the white-box
reference (untrained ResNet-56 SDNs on synthetic data: seconds)."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import synthetic_sdn

from deepsloth.cli.main import main
from deepsloth.data import CIFAR10_CLASSES, Dataset
from deepsloth.data.cache import write_dataset
from deepsloth.errors import DeepslothError
from deepsloth.experiments.context import load_context
from deepsloth.data.selection import fraction_indices, subset_dataset
from deepsloth.experiments.transfer import run_transfer, scenario2_subsets
from deepsloth.models import create_model
from deepsloth.models.io import save_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fractions_are_per_class_and_seeded():
    labels = torch.arange(200) % 10            # 20 per class
    a = fraction_indices(labels, 0.25, seed=3)
    assert torch.bincount(labels[a], minlength=10).tolist() == [5] * 10
    assert torch.equal(a, fraction_indices(labels, 0.25, seed=3)) and torch.equal(a, torch.sort(a).values)
    assert not torch.equal(a, fraction_indices(labels, 0.25, seed=4))
    assert len(fraction_indices(labels, 1.0, seed=0)) == 200
    assert torch.bincount(labels[fraction_indices(labels, 0.01, seed=0)]).tolist() == [1] * 10   # at least one
    with pytest.raises(DeepslothError):
        fraction_indices(labels, 0.0, seed=0)


def test_class_subsets_reindex_labels():
    ds = Dataset("cifar10", "test", torch.zeros(20, 3, 32, 32, dtype=torch.uint8), torch.arange(20) % 10,
                 list(CIFAR10_CLASSES))
    sub = subset_dataset(ds, [7, 2, 5])
    assert sub.labels.tolist() == [1, 2, 0, 1, 2, 0] and sub.classes == ["horse", "bird", "dog"]


@pytest.mark.parametrize("c", [5, 6, 7])
@pytest.mark.parametrize("shared", [0, 2, 4])
def test_scenario2_subsets_share_exactly(c, shared):
    if 2 * c - shared > 10:
        with pytest.raises(DeepslothError):
            scenario2_subsets(10, c, shared)
        return
    v, s = scenario2_subsets(10, c, shared, seed=0)
    assert len(v) == len(set(v)) == c and len(s) == len(set(s)) == c
    assert len(set(v) & set(s)) == shared
    assert (v, s) == scenario2_subsets(10, c, shared, seed=0)
    # the victim depends on c only: every surrogate of one c attacks the same victim
    others = [scenario2_subsets(10, c, k, seed=0)[0] for k in (0, 2, 4) if 2 * c - k <= 10]
    assert all(o == v for o in others)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("transfer")
    synthetic_sdn(base, 20, 8, model_dir=base / "victim")
    meta = {"arch": "resnet56", "dataset": "cifar10", "mode": "sdn", "num_classes": 10, "input_size": 32}
    save_model_dir(base / "surrogate", create_model("resnet56", "cifar10", sdn=True, seed=1), meta)
    return base


def test_transfer_records_both_models_and_the_white_box_reference(env, tmp_path, capsys):
    assert main(["transfer", "--surrogate", str(env / "surrogate"), "--victim", str(env / "victim"), "--n", "6",
                 "--data-root", str(env / "data"), "--device", "cpu", "--out", str(tmp_path), "--json",
                 "--attacks", "deepsloth-linf-sample", "pgd"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["attack"]["attack"] for r in rows] == ["deepsloth", "pgd"]
    for r in rows:
        t = r["transfer"]
        assert t["victim"]["name"] == "victim" and t["surrogate"]["name"] == "surrogate"
        assert t["victim"]["weights_sha256"] != t["surrogate"]["weights_sha256"]
        assert r["model"]["weights_sha256"] == t["victim"]["weights_sha256"]      # evaluated on the victim
        assert set(t["white_box"]) == set(r["rad"]) and "efficacy_reduction" in t["white_box"]["5"]
        assert r["data"]["n"] == 6 and sum(r["rad"]["5"]["attacked"]["exit_counts"]) == 6
    files = sorted(p.name for p in (tmp_path / "victim" / "transfer").glob("*.json"))
    assert len(files) == 2 and all(f.startswith("surrogate-") for f in files)
    # the white-box cells are ordinary comparisons next to them
    assert len(list((tmp_path / "victim").glob("*-sample-*.json"))) == 2
    with pytest.raises(DeepslothError, match="same model"):
        run_transfer(load_context(env / "victim", n=6, device="cpu", data_root=env / "data"), str(env / "victim"),
                     ["deepsloth"], tmp_path)


def test_a_class_subset_model_is_evaluated_on_its_classes(env, tmp_path):
    model = create_model("resnet56", "cifar10", sdn=True, seed=0, num_classes=3).eval()
    save_model_dir(tmp_path / "m", model, {"arch": "resnet56", "dataset": "cifar10", "mode": "sdn", "num_classes": 3,
                                           "input_size": 32, "class_subset": {"classes": [7, 2, 5],
                                                                              "names": ["horse", "bird", "dog"]}})
    labels = torch.arange(20) % 10
    write_dataset("cifar10", tmp_path / "data", {"test": (torch.zeros(20, 3, 32, 32, dtype=torch.uint8), labels)},
                  CIFAR10_CLASSES, "synthetic")
    ctx = load_context(tmp_path / "m", device="cpu", data_root=tmp_path / "data")   # thresholds are lazy
    mapping = {7: 0, 2: 1, 5: 2}
    assert ctx.n == 6 and ctx.labels.tolist() == [mapping[y] for y in labels.tolist() if y in mapping]
    assert ctx.test.classes == ["horse", "bird", "dog"]


def test_scenario2_trains_one_victim_per_c_and_records_both_trainings(tmp_path, monkeypatch):
    """Scenario 2's bookkeeping, with training and transfer replaced by recorders."""
    from deepsloth.experiments import transfer as tr
    trained, transfers = [], []

    def fake_train(out, *, classes, **kw):
        trained.append((out, tuple(classes)))
        for sub, acc, secs in (("cnn", 0.8, 100.0), ("sdn", 0.79, 20.5)):
            (out / sub).mkdir(parents=True, exist_ok=True)
            (out / sub / "model.json").write_text(json.dumps({
                "accuracy": {"final": acc, "per_exit": [0.5, acc]}, "train_seconds": secs, "train_images": 2500,
                "history": [{}] * (3 if sub == "cnn" else 1)}))
        return out / "sdn"

    monkeypatch.setattr(tr, "train_sdn", fake_train)
    monkeypatch.setattr(tr, "load_context", lambda path, **kw: path)
    monkeypatch.setattr(tr, "run_transfer", lambda ctx, sur, cells, out, **kw: transfers.append((ctx, sur, kw["extra"]))
                        or [kw["extra"]])
    rows = tr.scenario2("mobilenet", [5], [0, 2, 4], tmp_path, dataset="cifar10", cells=["deepsloth-linf-sample"],
                        epochs=3, ic_epochs=1)
    victims = {out for out, _ in trained if out.name == "victim"}
    assert len(victims) == 1 and len({out for out, _ in trained}) == 4   # one victim (reused), three surrogates
    assert {ctx for ctx, _, _ in transfers} == {str(next(iter(victims)) / "sdn")}
    for (ctx, sur, extra), shared in zip(transfers, (0, 2, 4)):
        sc = extra["scenario"]
        assert sc["shared"] == shared and len(set(sc["victim_classes"]) & set(sc["surrogate_classes"])) == shared
        assert sc["surrogate_training"] == {"cnn_final_accuracy": 0.8, "sdn_final_accuracy": 0.79,
                                            "sdn_per_exit_accuracy": [0.5, 0.79], "train_images": 2500,
                                            "cnn_epochs": 3, "ic_epochs": 1, "train_seconds": 120.5}
    assert len(rows) == 3
