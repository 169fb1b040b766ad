"""Training on real CIFAR-10 (small subsets): model directories, IC-only freezing, resume."""
import json

import pytest
import torch

import deepsloth.train.loop as loop
from deepsloth.cli.main import main
from deepsloth.models import create_model
from deepsloth.train.recipes import default_recipe

pytestmark = pytest.mark.slow


def _train(root, out, *extra):
    argv = ["train", "--arch", "resnet56", "--recipe", "fast", "--data-root", str(root),
            "--device", "cpu", "--out", str(out), "--train-n", "512", "--test-n", "200", *extra]
    return main(argv)


def test_cnn_then_ic_only_directories_load_back(cifar10_root, tmp_path):
    cnn_dir, sdn_dir = tmp_path / "cnn", tmp_path / "sdn"
    assert _train(cifar10_root, cnn_dir, "--mode", "cnn", "--epochs", "1") == 0
    cnn = create_model(cnn_dir)
    meta = cnn.meta
    assert meta["mode"] == "cnn" and meta["exits"] == 1 and meta["seed"] == 0
    assert meta["recipe"]["name"] == "fast-cnn" and meta["recipe"]["epochs"] == 1
    assert "cifar10-jpeg" in meta["data_source"] and meta["accuracy"]["n"] == 200
    assert not (cnn_dir / "checkpoint.json").exists()

    assert _train(cifar10_root, sdn_dir, "--mode", "ic-only", "--from", str(cnn_dir), "--epochs", "1") == 0
    sdn = create_model(sdn_dir)
    meta = sdn.meta
    assert meta["mode"] == "ic-only" and meta["exits"] == 28
    assert len(meta["accuracy"]["per_exit"]) == 28 and len(meta["cost"]["normalised"]) == 28
    # IC-only training leaves the backbone exactly as the CNN had it (weights and BN statistics)
    cnn_sd = cnn.state_dict()
    for name, value in sdn.state_dict().items():
        if not name.startswith("ics."):
            assert torch.equal(value, cnn_sd[name]), name
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(sdn(x)[-1], cnn(x))


def test_ic_only_needs_a_cnn(cifar10_root, tmp_path, capsys):
    assert _train(cifar10_root, tmp_path / "x", "--mode", "ic-only") == 2
    assert "--from" in capsys.readouterr().err


def test_cnn_warm_start_continues_from_a_cnn(cifar10_root, tmp_path, capsys):
    first, second = tmp_path / "cnn", tmp_path / "cnn2"
    assert _train(cifar10_root, first, "--mode", "cnn", "--epochs", "1", "--train-n", "256") == 0
    assert _train(cifar10_root, second, "--mode", "cnn", "--from", str(first), "--epochs", "1",
                  "--lr", "1e-6", "--train-n", "256", "--cutout", "8") == 0
    a = create_model(first)
    meta_a = a.meta
    b = create_model(second)
    meta_b = b.meta
    assert meta_b["mode"] == "cnn" and meta_b["recipe"]["lr"] == 1e-6
    assert meta_b["recipe"]["cutout"] == 8 and "cutout" not in meta_a["recipe"]   # recorded only when used
    assert meta_b["parent"]["path"] == str(first) and meta_b["parent"]["history"] == meta_a["history"]
    # the second stage started from the first one's weights (a tiny learning rate barely
    # moves them, while a fresh initialisation would be far away) and did train
    start = dict(a.named_parameters())
    assert any(not torch.equal(p, start[n]) for n, p in b.named_parameters())
    assert max((p - start[n]).abs().max().item() for n, p in b.named_parameters()) < 1e-3
    # joint SDN training always starts from scratch
    capsys.readouterr()
    assert _train(cifar10_root, tmp_path / "x", "--mode", "sdn", "--from", str(first)) == 2
    assert "--from" in capsys.readouterr().err


def test_killed_run_resumes_to_the_same_result(cifar10_root, tmp_path, monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _train(cifar10_root, full, "--mode", "cnn", "--epochs", "2") == 0

    real_save = loop.save_checkpoint

    def save_then_die(directory, model, opt, info):
        real_save(directory, model, opt, info)
        raise KeyboardInterrupt  # as if killed right after epoch 1's checkpoint

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    assert _train(cifar10_root, killed, "--mode", "cnn", "--epochs", "2") == 130
    assert json.loads((killed / "checkpoint.json").read_text())["epoch"] == 1
    assert not (killed / "model.json").exists()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)

    # without --resume the unfinished run is protected
    assert _train(cifar10_root, killed, "--mode", "cnn", "--epochs", "2") == 2
    assert _train(cifar10_root, killed, "--mode", "cnn", "--epochs", "2", "--resume") == 0
    a = create_model(full)
    b = create_model(killed)
    meta_b = b.meta
    assert len(meta_b["history"]) == 2 and meta_b["history"][-1]["epoch"] == 2
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_recipes_follow_the_spec():
    r = default_recipe("resnet56", "cnn")
    assert (r.optimizer, r.lr, r.weight_decay, r.epochs, r.milestones) == ("sgd", 0.01, 1e-4, 100, (10, 20))
    assert abs(r.lr_at(10, 0, 100) - 0.001) < 1e-12 and abs(r.lr_at(25, 0, 100) - 0.0001) < 1e-12
    assert default_recipe("vgg16bn", "cnn").weight_decay == 5e-4
    ic = default_recipe("mobilenet", "ic-only")
    assert (ic.optimizer, ic.lr, ic.epochs, ic.milestones) == ("adam", 1e-3, 25, (15,))
    fast = default_recipe("resnet56", "cnn", "fast", epochs=3)
    lrs = [fast.lr_at(e, s, 10) for e in range(3) for s in range(10)]
    assert max(lrs) <= fast.lr and lrs[-1] < 0.01 * fast.lr and lrs[0] < lrs[5]


def test_sdn_loss_weights():
    w = loop.exit_weights([0.25, 0.5, 1.0], epoch=0, epochs=10)
    assert w == [0.01, 0.01, 1.0]
    w = loop.exit_weights([0.25, 0.5, 1.0], epoch=5, epochs=10)
    assert w == pytest.approx([0.01 + 5 * 0.25 / 10, 0.01 + 5 * 0.5 / 10, 1.0])


def test_zoo_train_runs_every_cnn_stage_then_ic_only(cifar10_root, tmp_path, monkeypatch):
    import deepsloth.experiments.zoo as zoo
    import deepsloth.precision as precision
    from deepsloth.data import load_dataset

    # a recipe's bf16 stages run in bf16 on a CPU with native bf16 (test_precision covers the fp32 fallback)
    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: True)

    recipe = {"arch": "resnet56", "dataset": "cifar10", "seed": 0, "store_dtype": "float32",
              "cnn": [{"recipe": "fast", "epochs": 1}, {"recipe": "fast", "epochs": 1, "lr": 1e-6, "amp": "bf16"}],
              "average": {"last": 2, "bn_images": 64}, "ic-only": {"recipe": "fast", "epochs": 1, "amp": "bf16"}}
    monkeypatch.setattr(zoo, "ZOO_RECIPES", {"resnet56_sdn_cifar10": recipe})
    monkeypatch.setattr(zoo, "load_dataset",
                        lambda name, split, root=None: load_dataset(name, split, root).subset(256 if split == "train" else 100))
    out = tmp_path / "zoo"
    assert main(["zoo", "train", "resnet56", "--out", str(out), "--data-root", str(cifar10_root),
                 "--device", "cpu"]) == 0
    _ = create_model(out / "cnn")
    first = _.meta
    _ = create_model(out / "cnn2")
    second = _.meta
    sdn = create_model(out / "sdn")
    meta = sdn.meta
    assert "parent" not in first and second["parent"]["path"] == str(out / "cnn")
    # a stage's own precision (the VGG16-BN recipe's later stages run under bf16 autocast)
    assert first.get("amp") is None and second["amp"] == "bf16" and meta["amp"] == "bf16"
    _ = create_model(out / "cnn-avg")
    avg = _.meta
    assert second["recipe"]["lr"] == 1e-6 and meta["parent"]["path"] == str(out / "cnn-avg")
    assert [r["path"] for r in avg["averaged_from"]] == [str(out / "cnn"), str(out / "cnn2")]
    assert avg["averaged_from"][1]["parent"]["path"] == str(out / "cnn")  # the whole lineage is kept
    assert avg["recipe"]["bn_images"] == 64 and avg["accuracy"]["n"] == 100
    assert meta["parent"]["averaged_from"][0]["path"] == str(out / "cnn")
    assert meta["mode"] == "ic-only" and meta["exits"] == 28 and meta["zoo_name"] == "resnet56_sdn_cifar10"


def test_zoo_train_on_another_dataset(tinyimagenet_root, tmp_path, monkeypatch):
    """`zoo train ARCH --dataset tinyimagenet`: one CNN stage then IC-only, on 64x64 inputs and 200 classes."""
    import deepsloth.experiments.zoo as zoo
    from deepsloth.data import load_dataset

    monkeypatch.setattr(zoo, "load_dataset",
                        lambda name, split, root=None: load_dataset(name, split, root).subset(200 if split == "train" else 40))
    out = tmp_path / "tiny"
    assert main(["zoo", "train", "mobilenet", "--dataset", "tinyimagenet", "--recipe", "fast", "--epochs", "1",
                 "--ic-epochs", "1", "--out", str(out), "--data-root", str(tinyimagenet_root), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cnn", "sdn"]         # one CNN stage, no averaging
    _ = create_model(out / "cnn")
    cnn = _.meta
    sdn = create_model(out / "sdn")
    meta = sdn.meta
    assert (cnn["dataset"], cnn["num_classes"], cnn["input_size"]) == ("tinyimagenet", 200, 64)
    assert cnn["recipe"]["name"] == "fast-cnn" and len(cnn["history"]) == 1 and len(meta["history"]) == 1
    assert meta["zoo_name"] == "mobilenet_sdn_tinyimagenet" and meta["mode"] == "ic-only"
    assert sdn(torch.zeros(1, 3, 64, 64))[-1].shape == (1, 200)
