"""Internal-representation statistics on a constructed model whose exit outputs are known, PCA on
known data, and `represent` end to end on a small synthetic setup."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from deepsloth.experiments.represent import exit_statistics, ic_features, pca_2d

pytestmark = pytest.mark.usefixtures("one_thread")


def test_statistics_of_known_exit_outputs():
    c = 4
    uniform = torch.zeros(3, c)                                   # softmax = 1/4 everywhere
    peaked = torch.tensor([[50.0, 0, 0, 0], [0, 50.0, 0, 0], [0, 0, 0, 50.0]])
    half = torch.tensor([[math.log(3.0), 0, 0, 0]] * 3)           # p = (1/2, 1/6, 1/6, 1/6), argmax 0
    s = exit_statistics([uniform, half, peaked])
    assert torch.allclose(s["max_softmax"][0], torch.full((3,), 0.25))
    assert torch.allclose(s["entropy"][0], torch.ones(3))
    assert torch.allclose(s["max_softmax"][1], torch.full((3,), 0.5))
    h = -(0.5 * math.log(0.5) + 3 * (1 / 6) * math.log(1 / 6)) / math.log(4)
    assert torch.allclose(s["entropy"][1], torch.full((3,), h))
    assert torch.allclose(s["max_softmax"][2], torch.ones(3)) and float(s["entropy"][2].max()) < 1e-6
    # agreement with the final exit: argmax of exit 2 is 0, 0, 0; the final predicts 0, 1, 3
    assert s["agreement"][1].tolist() == [1.0, 0.0, 0.0] and s["agreement"][2].tolist() == [1.0, 1.0, 1.0]


def test_pca_on_points_along_a_line():
    t = torch.linspace(-1, 1, 50).unsqueeze(1)
    fit = torch.cat([t, 2 * t, torch.zeros_like(t)], dim=1)
    (p_fit, p_other), ratio = pca_2d(fit, fit + torch.tensor([[0.0, 0.0, 1.0]]))
    assert ratio[0] == pytest.approx(1.0) and ratio[1] == pytest.approx(0.0, abs=1e-9)
    assert torch.allclose(p_fit[:, 0].abs(), (t.squeeze(1) * math.sqrt(5)).abs(), atol=1e-5)
    assert torch.allclose(p_other[:, 0], p_fit[:, 0], atol=1e-5)   # the offset is orthogonal to PC 1


def test_ic_features_are_the_inputs_of_every_exit_head():
    from deepsloth.models import create_model
    model = create_model("resnet56", "cifar10", sdn=True, seed=0).eval()
    x = torch.rand(3, 3, 32, 32)
    feats = ic_features(model, x)
    assert len(feats) == 28 and feats[0].shape == (3, 16 * 32 * 32) and feats[-1].shape == (3, 64 * 8 * 8)
    with torch.no_grad():
        h = model.blocks[0](model.stem(x))
    assert torch.equal(feats[0], h.flatten(1))


def test_represent_end_to_end(tmp_path):
    from deepsloth.cli.main import main
    from deepsloth.data import CIFAR10_CLASSES
    from deepsloth.data.cache import write_dataset
    from deepsloth.models import create_model
    from deepsloth.models.io import save_model_dir

    model = create_model("resnet56", "cifar10", sdn=True, seed=0).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (12, 3, 32, 32), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        y = model(x.float() / 255)[-1].argmax(1)
    write_dataset("cifar10", tmp_path / "data", {"test": (x, y)}, CIFAR10_CLASSES, "synthetic")
    save_model_dir(tmp_path / "m", model, {"arch": "resnet56", "dataset": "cifar10", "mode": "sdn",
                                           "num_classes": 10, "input_size": 32})
    cls = int(y[0])
    n = int((y == cls).sum())
    out = tmp_path / "rep"
    assert main(["represent", "--model", str(tmp_path / "m"), "--data-root", str(tmp_path / "data"), "--device", "cpu",
                 "--class", str(cls), "--n", str(n), "--out", str(out), "--batch-size", "8"]) == 0
    rec = json.loads((out / "represent.json").read_text())
    assert rec["class"] == cls and rec["data"]["n"] == n and len(rec["exits"]) == 28
    assert rec["exits"][-1]["clean"]["agreement_with_final"] == 1.0
    for f in ["summary.png", "images.png", "exit-01.png", "exit-28.png"]:
        assert (out / f).stat().st_size > 5_000
