"""Threshold calibration (SPEC 4.2) on a constructed sweep, and the thresholds.json cache."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deepsloth.errors import DeepslothError
from deepsloth.exits import calibrate as cal
from deepsloth.exits.calibrate import (THRESHOLD_GRID, calibrate_thresholds, calibration_for,
                                       threshold_sweep)
from deepsloth.exits.forward import ExitOutputs
from deepsloth.models.backbones import Backbone, PoolLinear
from deepsloth.models.io import save_model_dir
from deepsloth.models.sdn import build_sdn

# 10 inputs, K = 2 (one IC + final). The final exit is right on inputs 0-7 (A_ref = 0.8).
# The IC is wrong on inputs 0-3 with confidence 0.3, 0.5, 0.7, 0.9 and agrees with the
# final exit on inputs 4-9 with confidence 0.2. Hence early-exit accuracy A(q):
#   q <= 0.3: 0.4;  0.35..0.5: 0.5;  0.55..0.7: 0.6;  0.75..0.9: 0.7;  0.95: 0.8
LABELS = torch.arange(10) % 3
FINAL = LABELS.clone()
FINAL[8:] = (LABELS[8:] + 1) % 3
IC = FINAL.clone()
IC[:4] = (LABELS[:4] + 1) % 3
CONF_IC = torch.tensor([0.3, 0.5, 0.7, 0.9] + [0.2] * 6)
OUT = ExitOutputs(torch.stack([CONF_IC, torch.ones(10)]), torch.stack([IC, FINAL]), torch.zeros(2, 10))


def expected_accuracy(q):
    if q <= 0.3 + 1e-9:
        return 0.4
    if q <= 0.5 + 1e-9:
        return 0.5
    if q <= 0.7 + 1e-9:
        return 0.6
    if q <= 0.9 + 1e-9:
        return 0.7
    return 0.8


def test_constructed_sweep():
    sweep = threshold_sweep(OUT, LABELS)
    assert [r["threshold"] for r in sweep] == list(THRESHOLD_GRID)
    for row in sweep:
        assert row["accuracy"] == pytest.approx(expected_accuracy(row["threshold"])), row
        assert sum(row["exit_counts"]) == 10


@pytest.mark.parametrize("rad,q,acc", [
    (5, 0.95, 0.8),     # need > 0.76
    (15, 0.75, 0.7),    # need > 0.68
    (12.5, 0.95, 0.8),  # need > 0.70: 0.70 itself does not qualify (strict)
    (13, 0.75, 0.7),    # need > 0.696
    (50, 0.35, 0.5),    # need > 0.40: 0.40 does not qualify (strict)
    (60, 0.05, 0.4),    # need > 0.32: the smallest q
])
def test_threshold_rule(rad, q, acc):
    got = calibrate_thresholds(OUT, LABELS, rads=[rad])[cal.rad_key(rad)]
    assert got["threshold"] == q
    assert got["accuracy"] == pytest.approx(acc)
    assert got["reference_accuracy"] == pytest.approx(0.8)


def test_default_budgets_are_5_and_15():
    got = calibrate_thresholds(OUT, LABELS)
    assert sorted(got) == ["15", "5"]
    assert got["5"]["threshold"] == 0.95 and got["15"]["threshold"] == 0.75


def test_no_qualifying_threshold_is_a_clear_error():
    with pytest.raises(DeepslothError, match=r"best reached is 80\.00% at threshold 0\.95"):
        calibrate_thresholds(OUT, LABELS, rads=[0])


# ----------------------------------------------------------------------------- cache

def tiny_sdn(seed: int = 0) -> nn.Module:
    """A 4-exit SDN small enough to run in milliseconds."""
    torch.manual_seed(seed)

    def cbr(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    return build_sdn(Backbone(cbr(3, 8, 1), [cbr(8, 16, 2), cbr(16, 16, 1), cbr(16, 32, 2)],
                              PoolLinear(32, 10)), 10, 32).eval()


META = {"arch": "tiny", "dataset": "cifar10", "mode": "sdn", "num_classes": 10, "input_size": 32}


@pytest.fixture()
def model_dir(tmp_path):
    model = tiny_sdn(0)
    return save_model_dir(tmp_path / "m", model, META), model


@pytest.fixture()
def clean():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(24) % 10


@pytest.fixture()
def count_forwards(monkeypatch):
    calls = []
    real = cal.collect_exit_outputs

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(cal, "collect_exit_outputs", counting)
    return calls


def test_thresholds_are_saved_and_reused(model_dir, clean, count_forwards, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSLOTH_DATA", str(tmp_path / "data"))
    path, model = model_dir
    x, y = clean
    first = calibration_for(path, model, None, x, y, rads=(50, 90))[0]
    assert len(count_forwards) == 1
    assert (path / "thresholds.json").is_file()
    stored = json.loads((path / "thresholds.json").read_text())
    assert stored["format"] == "deepsloth-thresholds/1" and len(stored["calibrations"]) == 1
    again, info = calibration_for(path, model, None, x, y, rads=(50, 90))
    assert again == first and info["cached"] and len(count_forwards) == 1
    # another RAD budget is selected from the stored sweep: no forward
    other = calibration_for(path, model, None, x, y, rads=(90,))[0]
    assert other["90"] == first["90"] and len(count_forwards) == 1


def test_stale_thresholds_are_never_reused(model_dir, clean, count_forwards, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSLOTH_DATA", str(tmp_path / "data"))
    path, model = model_dir
    x, y = clean
    calibration_for(path, model, None, x, y, rads=(90,))
    assert len(count_forwards) == 1
    calibration_for(path, model, None, x[:20], y[:20], rads=(90,))     # other data
    assert len(count_forwards) == 2
    calibration_for(path, model, None, x, (y + 1) % 10, rads=(90,))    # other labels
    assert len(count_forwards) == 3
    calibration_for(path, model, None, x, y, rads=(90,), policy="patience")  # other policy
    assert len(count_forwards) == 4
    # retrained weights in the same directory
    model2 = tiny_sdn(1)
    save_model_dir(path, model2, META)
    calibration_for(path, model2, None, x, y, rads=(90,))
    assert len(count_forwards) == 5
    # the original data, policy and weights of the last call are reused
    calibration_for(path, model2, None, x, y, rads=(90,))
    assert len(count_forwards) == 5


def test_corrupt_file_is_recomputed(model_dir, clean, count_forwards, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSLOTH_DATA", str(tmp_path / "data"))
    path, model = model_dir
    x, y = clean
    (path / "thresholds.json").write_text("{not json")
    calibration_for(path, model, None, x, y, rads=(90,))
    assert len(count_forwards) == 1
    assert json.loads((path / "thresholds.json").read_text())["format"] == "deepsloth-thresholds/1"


def test_read_only_model_dir_caches_under_the_data_root(model_dir, clean, count_forwards, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("DEEPSLOTH_DATA", str(tmp_path / "data"))
    path, model = model_dir
    x, y = clean
    real_write = cal.write_json

    def read_only(target, obj):  # tests may run as root, where chmod does not stop writes
        if path in type(path)(target).parents:
            raise PermissionError(13, "Read-only file system", str(target))
        return real_write(target, obj)

    monkeypatch.setattr(cal, "write_json", read_only)
    _, info = calibration_for(path, model, None, x, y, rads=(90,))
    assert not (path / "thresholds.json").exists()
    assert info["path"] and str(tmp_path / "data" / "thresholds") in info["path"]
    _, info = calibration_for(path, model, None, x, y, rads=(90,))
    assert info["cached"] and len(count_forwards) == 1

    # nowhere writable: still calibrates, caches nothing, never fails
    def nowhere(target, obj):
        raise PermissionError(13, "Read-only file system", str(target))

    monkeypatch.setattr(cal, "write_json", nowhere)
    _, info = calibration_for(path, model, None, x[:10], y[:10], rads=(90,))
    assert not info["cached"] and len(count_forwards) == 2
