"""The shipped zoo models, the bundled subsets and the audit on them."""
import json
from pathlib import Path

import pytest
import torch

from deepsloth.cli.main import main
from deepsloth.data.bundled import load_bundled
from deepsloth.exits.forward import collect_exit_outputs
from deepsloth.experiments.audit import AuditConfig, run_audit
from deepsloth.models import create_model, save_model_dir
from deepsloth.models.zoo import DEFAULT_MODEL, ZOO_DIR, zoo_names


def test_bundled_subsets_are_class_balanced():
    test, train = load_bundled("test"), load_bundled("train")
    assert tuple(test.images.shape) == (1000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert torch.bincount(test.labels, minlength=10).tolist() == [100] * 10
    assert torch.bincount(train.labels, minlength=10).tolist() == [25] * 10
    # the bundled test subset is the first 1,000 images of the stored test order
    assert test.meta["indices"].tolist() == list(range(1000))


def test_zoo_list_json(capsys):
    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == zoo_names()


@pytest.mark.parametrize("name", zoo_names())
def test_shipped_model_accuracy_holds_on_the_bundled_subset(name):
    model = create_model(name)
    meta = model.meta
    assert meta["dataset"] == "cifar10" and "cifar10-jpeg" in meta["data_source"]
    assert meta["recipe"] and meta["seed"] is not None
    test = load_bundled("test")
    acc = collect_exit_outputs(model, test.images).accuracy(test.labels)
    recorded = meta["accuracy"]["final"]
    assert meta["accuracy"]["n"] == 10_000
    assert abs(acc[-1] - recorded) <= 0.03, (acc[-1], recorded)
    assert len(acc) == meta["exits"] == len(meta["accuracy"]["per_exit"])


@pytest.mark.skipif(DEFAULT_MODEL not in zoo_names(), reason=f"zoo model {DEFAULT_MODEL} not shipped yet")
def test_audit_on_the_default_model(tmp_path):
    cfg = AuditConfig(n=50, batch_size=50, device="cpu")
    report = run_audit(cfg, tmp_path)
    for f in ("report.json", "report.md", "eec.png", "examples.png"):
        assert (tmp_path / f).is_file()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["config"]["seed"] == 0 and saved["deepsloth_version"] and saved["config"]["n"] == 50
    assert set(saved["comparisons"]) == {"clean", "deepsloth-linf-sample", "deepsloth-linf-universal",
                                         "pgd-linf-sample"}
    comps = report["comparisons"]
    clean, ds, pgd = (comps[k]["rad"]["5"] for k in ("clean", "deepsloth-linf-sample", "pgd-linf-sample"))
    assert clean["efficacy_reduction"] == 0 and clean["latency_amplification"] == 1
    assert ds["efficacy_reduction"] >= 0.9
    assert ds["latency_amplification"] > 1.2
    assert comps["deepsloth-linf-sample"]["norms"]["linf"]["max"] <= 8 / 255 + 1e-6
    assert comps["pgd-linf-sample"]["attacked"]["final_accuracy"] < comps["clean"]["clean"]["final_accuracy"]
    md = (tmp_path / "report.md").read_text()
    assert "eec.png" in md and "| clean |" in md
    # a second audit reuses every crafted result: identical numbers
    again = run_audit(cfg, tmp_path)
    assert all(again["comparisons"][k]["rad"] == comps[k]["rad"] for k in comps)


def test_lineage_counts_every_stage_once():
    from deepsloth.models.lineage import lineage
    rec = lambda path, name, ep, sec, **kw: {"path": path, "train_seconds": sec, **kw,
                                             "recipe": {"name": name, "epochs": ep, "lr": 0.1}}
    a = rec("a", "fast-cnn", 9, 100.0)
    b = rec("b", "fast-cnn", 20, 200.0, parent=a)
    c = rec("c", "fast-cnn", 12, 300.0, parent=b)
    avg = {"path": "avg", "train_seconds": 5.0, "recipe": {"name": "weight-average"}, "averaged_from": [b, c]}
    sdn = rec("sdn", "fast-ic-only", 3, 40.0, parent=avg)
    stages, seconds = lineage(sdn)
    assert stages == ["fast-cnn 9 ep lr 0.1", "fast-cnn 20 ep lr 0.1", "fast-cnn 12 ep lr 0.1",
                      "mean of 2", "fast-ic-only 3 ep lr 0.1"]
    assert seconds == 645.0
    # a backbone taken out of an SDN and trained further: the export is a stage without training of its own
    export = {"path": "exp", "recipe": None, "note": "backbone of sdn", "parent": sdn}
    stages, seconds = lineage(rec("more", "fast-cnn", 10, 60.0, parent=export))
    assert stages[-2:] == ["backbone of sdn", "fast-cnn 10 ep lr 0.1"] and seconds == 705.0
    # the shipped default records its whole lineage
    stages, seconds = lineage(create_model(DEFAULT_MODEL).meta)
    assert stages[-1].startswith("fast-ic-only") and seconds > 0


def test_install_stores_fp16_and_remeasures_the_shipped_accuracy(tmp_path, monkeypatch):
    from conftest import synthetic_sdn
    from deepsloth.data import load_dataset
    from deepsloth.experiments import zoo as zoo_exp
    from deepsloth.models.io import read_model_meta
    root, model_dir, model = synthetic_sdn(tmp_path, 8, 40)
    monkeypatch.setattr(zoo_exp, "ZOO_DIR", tmp_path / "zoo")   # never the package directory
    test = load_dataset("cifar10", "test", root)
    dest = zoo_exp.install(model_dir, "tiny_sdn_cifar10", "float16", test_set=test)
    assert dest == tmp_path / "zoo" / "tiny_sdn_cifar10"
    shipped = create_model(dest)
    meta = shipped.meta
    assert meta["stored_dtype"] == "float16" and meta["zoo_name"] == "tiny_sdn_cifar10"
    # every floating-point weight is the fp16 rounding of the trained one
    for (k, a), b in zip(model.state_dict().items(), shipped.state_dict().values()):
        if a.is_floating_point():
            assert torch.equal(b, a.half().float()), k
    # the recorded accuracy is that of the stored weights, over the whole test split
    acc = collect_exit_outputs(shipped, test.images).accuracy(test.labels)
    assert meta["accuracy"]["n"] == 40 and meta["accuracy"]["final"] == round(acc[-1], 4)
    assert meta["accuracy"]["per_exit"] == [round(a, 4) for a in acc]
    assert "accuracy_before_store" in meta and read_model_meta(dest)["accuracy"] == meta["accuracy"]


@pytest.mark.parametrize("name", zoo_names())
def test_one_loader_for_zoo_names_model_directories_and_architectures(name):
    from deepsloth.errors import DeepslothError
    from deepsloth.models import create_model
    by_name = create_model(name)
    meta = by_name.meta
    by_dir = create_model(str(ZOO_DIR / name))
    by_arch = create_model(meta["arch"], dataset=meta["dataset"], pretrained=True)
    for model in (by_name, by_dir, by_arch):
        assert model.meta == meta and not model.training
        assert model.model_dir.resolve() == (ZOO_DIR / name).resolve()
    weights = by_name.state_dict()
    for model in (by_dir, by_arch):
        assert all(torch.equal(a, weights[k]) for k, a in model.state_dict().items())
    with pytest.raises(DeepslothError, match="multi-exit models only"):
        create_model(meta["arch"], dataset=meta["dataset"], sdn=False, pretrained=True)
    with pytest.raises(DeepslothError, match="trained model"):
        create_model(name, seed=1)
    with pytest.raises(DeepslothError, match="not tinyimagenet"):
        create_model(name, dataset="tinyimagenet")
    with pytest.raises(DeepslothError, match="no pretrained"):
        create_model(meta["arch"], dataset="no-such-data", pretrained=True)


def test_a_folder_without_model_json_does_not_hide_a_zoo_model(tmp_path, monkeypatch, capsys):
    from deepsloth.models import create_model
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT_MODEL).mkdir()            # e.g. a results folder an attack wrote with --out .
    assert create_model(DEFAULT_MODEL).model_dir == ZOO_DIR / DEFAULT_MODEL
    # a real model directory of the same name wins, and says so
    save_model_dir(tmp_path / DEFAULT_MODEL, create_model("resnet56", seed=0),
                   {"arch": "resnet56", "dataset": "cifar10", "mode": "sdn"})
    assert create_model(DEFAULT_MODEL).model_dir == Path(DEFAULT_MODEL)
    assert "not the zoo model" in capsys.readouterr().err
