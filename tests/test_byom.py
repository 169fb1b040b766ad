"""Your own model through the toolkit's one loader: a model directory naming the function that builds it
(`export_model`) loads with `create_model`, takes exits with `train --mode ic-only --from DIR --exit-points ...`
(backbone bit-identical), and every command then takes it."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import synthetic_cifar10

from deepsloth.errors import DeepslothError
from deepsloth.experiments.training import TrainConfig, run_training
from deepsloth.models import AttachedExits, create_model, export_model
from deepsloth.models.io import read_model_meta

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from byom_nets import tiny_resnet
    base = tmp_path_factory.mktemp("byom")
    root = synthetic_cifar10(base / "data", 96, 32)
    torch.manual_seed(3)
    net = tiny_resnet(classes=10)
    for m in net.modules():   # not the initial BatchNorm statistics: they must travel too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    cnn = export_model(net.eval(), base / "cnn", builder="byom_nets:tiny_resnet", builder_kwargs={"classes": 10},
                       dataset="cifar10")
    return {"root": root, "cnn": cnn, "net": net, "base": base}


def test_a_builder_directory_loads_strictly_through_the_one_loader(setup):
    model = create_model(setup["cnn"])
    meta = read_model_meta(setup["cnn"])
    assert meta["arch"] == "custom" and meta["builder"] == "byom_nets:tiny_resnet" and meta["mode"] == "cnn"
    ref = setup["net"].state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items()) and set(model.state_dict()) == set(ref)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), setup["net"](x))


def test_ic_only_training_puts_exits_on_it_and_keeps_the_backbone(setup, capsys):
    out = setup["base"] / "sdn"
    run_training(TrainConfig(arch=None, mode="ic-only", init_from=str(setup["cnn"]), exit_points=["layer1", "layer2"],
                             out=str(out), recipe="fast", epochs=1, batch_size=32, train_n=96, test_n=32,
                             data_root=str(setup["root"]), device="cpu"), log=lambda s: None)
    sdn = create_model(out)
    assert isinstance(sdn, AttachedExits) and sdn.meta["exit_points"] == ["layer1", "layer2"]
    ref = setup["net"].state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in sdn.net.state_dict().items())   # the backbone, bit for bit
    x = torch.rand(5, 3, 32, 32)
    outs = sdn(x)
    assert len(outs) == 3 and all(o.shape == (5, 10) for o in outs)
    with torch.no_grad():
        assert torch.equal(outs[-1], setup["net"](x))
    # the commands take it like any model directory
    from deepsloth.cli.main import main
    assert main(["evaluate", "--model", str(out), "--n", "32", "--data-root", str(setup["root"]), "--rad", "50",
                 "--device", "cpu"]) == 0
    assert "exit" in capsys.readouterr().out
    assert main(["describe", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "custom" and info["kind"] == "sdn" and info["exits"] == 3
    assert info["cnn_params"] == sum(p.numel() for p in setup["net"].parameters()) < info["params"]
    assert info["cumulative_cost"][-1] == 1.0 and info["cumulative_cost"] == sorted(info["cumulative_cost"])


def test_bad_builders_and_exit_points_are_one_line_errors(setup, tmp_path):
    with pytest.raises(DeepslothError, match="cannot import the builder"):
        export_model(setup["net"], tmp_path / "x", builder="no_such_module:f", dataset="cifar10")
    with pytest.raises(DeepslothError, match="package.module:function"):
        export_model(setup["net"], tmp_path / "x", builder="byom_nets", dataset="cifar10")
    with pytest.raises(DeepslothError, match="builds"):   # the builder does not rebuild this network
        export_model(setup["net"], tmp_path / "y", builder="byom_nets:tiny_resnet", builder_kwargs={"width": 4},
                     dataset="cifar10")
    assert not (tmp_path / "y").exists()   # refused before anything is written
    with pytest.raises(DeepslothError, match="needs --exit-points"):
        run_training(TrainConfig(arch=None, mode="ic-only", init_from=str(setup["cnn"]), out=str(tmp_path / "z"),
                                 data_root=str(setup["root"]), device="cpu"), log=lambda s: None)
    with pytest.raises(DeepslothError, match="no module named nope"):
        run_training(TrainConfig(arch=None, mode="ic-only", init_from=str(setup["cnn"]), exit_points=["nope"],
                                 out=str(tmp_path / "w"), recipe="fast", epochs=1, train_n=32, test_n=16,
                                 data_root=str(setup["root"]), device="cpu"), log=lambda s: None)


def test_the_bring_your_own_model_page_runs_as_written(cifar10_root, tmp_path, monkeypatch, capsys):
    """docs/byom.md, every code block in order: mynets.py, the export, the training and audit commands, the ViT."""
    import re
    import shlex
    import sys
    from pathlib import Path

    from deepsloth.cli.main import main

    page = (Path(__file__).resolve().parents[1] / "docs" / "byom.md").read_text()
    blocks = re.findall(r"```(python|bash)\n(.*?)```", page, re.S)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DEEPSLOTH_DATA", str(cifar10_root))
    (tmp_path / "mynets.py").write_text(blocks[0][1])
    printed = []
    for kind, code in blocks[1:]:
        if kind == "python":
            exec(compile(code, "byom.md", "exec"), {"__name__": "byom_page", "print": lambda *a: printed.append(a)})
            continue
        for line in code.strip().splitlines():
            assert main(shlex.split(line)[1:] + ["--device", "cpu"]) == 0, line
    sys.modules.pop("mynets", None)
    capsys.readouterr()
    assert printed[-1] == ([(2, 10), (2, 10), (2, 10), (2, 10)],)   # the ViT example's printed shapes
    sdn = create_model(tmp_path / "runs" / "my-resnet-exits")
    assert isinstance(sdn, AttachedExits) and len(sdn.ics) == 2
    assert (tmp_path / "runs" / "my-resnet-audit" / "report.md").is_file()
    assert (tmp_path / "runs" / "my-resnet-defend" / "my-resnet-exits" / "defence-jpeg-quality-75.json").is_file()
