"""Cost accounting (SPEC 4.3) on a tiny model whose ops are counted by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deepsloth.exits import evaluate as evaluate_mod
from deepsloth.exits.cost import ExitCosts, measure_exit_costs
from deepsloth.exits.evaluate import exit_costs_for


class Tiny(nn.Module):
    """conv3x3 (1->1, no bias) on 4x4 -> ReLU -> flatten -> IC Linear(4,2) | Linear(4,3) -> Linear(3,2)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, bias=False)
        self.ic = nn.Linear(4, 2)
        self.mid = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        return [self.ic(h), self.head(self.mid(h))]


def test_hand_counted_ops_and_macs():
    costs = measure_exit_costs(Tiny(), (1, 4, 4))
    # conv: 2x2 outputs x (9 mults + 8 adds) = 68 ops, 36 MACs; ReLU: 4
    # IC Linear(4->2) with bias: 2 x (4 mults + 3 adds + 1 bias) = 16 ops, 8 MACs
    # exit 1 = 68 + 4 + 16 = 88 ops, 36 + 8 = 44 MACs
    # Linear(4->3): 3 x 8 = 24 ops, 12 MACs; Linear(3->2): 2 x 6 = 12 ops, 6 MACs
    # exit 2 includes the IC head that ran before it: 88 + 24 + 12 = 124 ops, 62 MACs
    assert costs.ops == [88, 124]
    assert costs.macs == [44, 62]
    assert costs.normalised == pytest.approx([88 / 124, 1.0])
    again = ExitCosts.from_dict(costs.to_dict())
    assert again.ops == costs.ops and again.macs == costs.macs


def test_costs_come_from_model_json_when_stored(monkeypatch):
    stored = {"convention": "paper", "ops": [10, 40], "macs": [5, 20], "normalised": [0.25, 1.0]}

    def boom(*a, **k):
        raise AssertionError("must not measure when model.json has the cost")

    monkeypatch.setattr(evaluate_mod, "measure_exit_costs", boom)
    got = exit_costs_for(Tiny(), {"cost": stored, "exits": 2})
    assert got.ops == [10, 40] and got.normalised == [0.25, 1.0]


def test_costs_are_measured_when_absent_or_stale():
    assert exit_costs_for(Tiny(), {}, (1, 4, 4)).ops == [88, 124]
    stale = {"cost": {"ops": [1, 2, 3], "macs": [1, 2, 3]}, "exits": 2}
    assert exit_costs_for(Tiny(), stale, (1, 4, 4)).ops == [88, 124]
