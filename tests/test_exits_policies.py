"""Exit policies on constructed exit outputs (0-based exit indices, K-1 = final)."""
from __future__ import annotations

import math

import pytest
import torch

from deepsloth.errors import DeepslothError
from deepsloth.exits.forward import ExitOutputs
from deepsloth.exits.policies import (THRESHOLD_GRID, ConfidencePolicy, EntropyPolicy, PatiencePolicy,
                                      exit_stats, make_policy)


def outputs(conf, pred, ent=None) -> ExitOutputs:
    conf = torch.tensor(conf, dtype=torch.float32)
    pred = torch.tensor(pred, dtype=torch.long)
    ent = torch.zeros_like(conf) if ent is None else torch.tensor(ent, dtype=torch.float32)
    return ExitOutputs(conf, pred, ent)


# K = 3 exits, N = 4 inputs
OUT = outputs(conf=[[0.9, 0.2, 0.5, 0.1],
                    [0.95, 0.8, 0.4, 0.2],
                    [0.99, 0.9, 0.6, 0.3]],
              pred=[[1, 2, 3, 4],
                    [1, 2, 0, 4],
                    [1, 2, 0, 5]])


def test_grid_is_the_spec_sweep():
    assert THRESHOLD_GRID == tuple(round(0.05 * i, 2) for i in range(1, 20))
    assert THRESHOLD_GRID[0] == 0.05 and THRESHOLD_GRID[-1] == 0.95 and len(THRESHOLD_GRID) == 19


def test_confidence_policy_first_ic_at_or_above_q():
    p = ConfidencePolicy()
    assert p.exit_index(OUT, 0.5).tolist() == [0, 1, 0, 2]   # 0.5 >= 0.5 fires (SPEC 4.1)
    assert p.exit_index(OUT, 0.85).tolist() == [0, 2, 2, 2]   # the final exit answers the rest
    assert p.exit_index(OUT, 0.05).tolist() == [0, 0, 0, 0]
    idx, pred = p.exit_predictions(OUT, 0.85)
    assert pred.tolist() == [1, 2, 0, 5]


def test_the_final_exit_never_needs_to_fire():
    # confidence below q everywhere, including the final exit: it still answers
    assert ConfidencePolicy().exit_index(OUT, 0.999).tolist() == [2, 2, 2, 2]


def test_entropy_policy_uses_normalised_certainty():
    c = 4
    h = math.log(c)
    out = outputs(conf=[[0.5, 0.5], [0.5, 0.5]], pred=[[0, 1], [0, 1]],
                  ent=[[0.1 * h, 0.6 * h], [0.0, 0.0]])
    p = EntropyPolicy(num_classes=c)
    assert p.exit_index(out, 0.8).tolist() == [0, 1]   # certainty 0.9 and 0.4
    assert p.exit_index(out, 0.3).tolist() == [0, 0]
    with pytest.raises(DeepslothError):
        make_policy("entropy")   # needs the class count


def test_patience_policy_counts_agreeing_exits():
    out = outputs(conf=[[0.1] * 3] * 5,
                  pred=[[0, 0, 1], [0, 1, 1], [0, 1, 2], [0, 1, 2], [0, 3, 2]])
    p = PatiencePolicy()
    assert p.exit_index(out, 1).tolist() == [1, 2, 1]
    assert p.exit_index(out, 2).tolist() == [2, 3, 4]     # input 2 reaches a streak of 2 only at the end
    assert p.exit_index(out, 3).tolist() == [3, 4, 4]
    assert p.grid(5) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(DeepslothError):
        p.exit_index(out, 1.5)


@pytest.mark.parametrize("name", ["confidence", "entropy", "patience"])
def test_runtime_view_matches_batched_view(name):
    """fire_last on a growing history (the runtime) equals fire_mask on all exits (evaluation)."""
    torch.manual_seed(0)
    logits = torch.randn(6, 50, 5) * 2
    conf, pred, ent = exit_stats(logits)
    p = make_policy(name, num_classes=5)
    for q in (p.grid(6)[:3] if name == "patience" else (0.3, 0.5, 0.7)):
        full = p.fire_mask(conf, pred, ent, q)
        for i in range(6):
            assert torch.equal(p.fire_last(list(conf[:i + 1]), list(pred[:i + 1]), list(ent[:i + 1]), q), full[i])


def test_exit_stats_are_the_batched_forward_numbers():
    torch.manual_seed(1)
    logits = torch.randn(3, 7, 10)
    conf, pred, ent = exit_stats(logits)
    p = torch.softmax(logits, -1)
    assert torch.allclose(conf, p.max(-1).values)
    assert torch.equal(pred, p.argmax(-1))
    assert torch.allclose(ent, -(p * p.log()).sum(-1), atol=1e-6)


def test_make_policy():
    assert isinstance(make_policy(None), ConfidencePolicy)
    assert isinstance(make_policy("patience"), PatiencePolicy)
    p = ConfidencePolicy()
    assert make_policy(p) is p
    with pytest.raises(DeepslothError, match="unknown exit policy"):
        make_policy("magic")
