"""Model directories load strictly and never unpickle."""
import json

import pytest
import torch

from deepsloth.errors import DeepslothError
from deepsloth.io import load_tensors, save_tensors
from deepsloth.models import create_model, save_model_dir
from deepsloth.models.zoo import resolve_model


def _save(tmp_path, arch="resnet56", mode="ic-only"):
    model = create_model(arch, "cifar10", sdn=mode != "cnn", seed=0)
    save_model_dir(tmp_path, model, {"arch": arch, "dataset": "cifar10", "mode": mode})
    return model


def test_round_trip_is_exact(tmp_path):
    model = _save(tmp_path).eval()
    loaded = create_model(tmp_path)
    meta = loaded.meta
    assert meta["exits"] == 28 and meta["package_version"]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), loaded(x)))


def test_missing_weight_is_an_error(tmp_path):
    _save(tmp_path)
    tensors = load_tensors(tmp_path / "model.safetensors")
    del tensors["ics.3.linear.weight"]
    save_tensors(tmp_path / "model.safetensors", tensors)
    with pytest.raises(DeepslothError, match="missing.*ics.3.linear.weight"):
        create_model(tmp_path)


def test_unexpected_weight_is_an_error(tmp_path):
    _save(tmp_path)
    tensors = load_tensors(tmp_path / "model.safetensors")
    tensors["extra.weight"] = torch.zeros(1)
    save_tensors(tmp_path / "model.safetensors", tensors)
    with pytest.raises(DeepslothError, match="unexpected.*extra.weight"):
        create_model(tmp_path)


def test_mismatched_architecture_is_an_error(tmp_path):
    _save(tmp_path, arch="resnet56")
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["arch"] = "mobilenet"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(DeepslothError, match="do not match"):
        create_model(tmp_path)


def test_cnn_weights_do_not_load_as_sdn(tmp_path):
    _save(tmp_path, mode="cnn")
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["mode"] = "ic-only"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(DeepslothError, match="missing"):
        create_model(tmp_path)


def test_fp16_storage_loads_back_as_float32(tmp_path):
    model = create_model("resnet56", "cifar10", seed=0)
    save_model_dir(tmp_path, model, {"arch": "resnet56", "dataset": "cifar10", "mode": "ic-only"},
                   dtype=torch.float16)
    loaded = create_model(tmp_path)
    _ = loaded.meta
    w = loaded.blocks[0].conv1.weight
    assert w.dtype == torch.float32
    assert torch.allclose(w, model.blocks[0].conv1.weight, atol=1e-3)


def test_unknown_model_spec_is_an_error(tmp_path):
    with pytest.raises(DeepslothError, match="no model directory or zoo model"):
        resolve_model(tmp_path / "nope")
