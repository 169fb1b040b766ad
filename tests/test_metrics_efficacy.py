"""The efficacy formula (SPEC 4.4) pinned on hand-computed EEC examples, and the EEC plot."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deepsloth.errors import DeepslothError
from deepsloth.metrics.efficacy import eec_curve, efficacy, efficacy_reduction, exit_counts, mean_cost

COSTS = [0.2, 0.5, 1.0]  # K = 3: two ICs and the final exit


def test_curve_points_follow_the_spec():
    x, y = eec_curve([1, 2, 1], COSTS)
    assert x.tolist() == [0.0, 0.2, 0.5, 1.0]
    assert y.tolist() == [0.0, 0.25, 0.75, 1.0]


def test_mixed_histogram_by_hand():
    # trapezoids: .5*.2*(0+.25) + .5*.3*(.25+.75) + .5*.5*(.75+1) = .025 + .15 + .4375
    assert efficacy([1, 2, 1], COSTS) == pytest.approx(0.6125, abs=1e-12)


def test_all_exit_at_the_first_ic():
    # y = [0, 1, 1, 1]: area = c_1 / 2 + (1 - c_1) = 1 - c_1 / 2
    assert efficacy([4, 0, 0], COSTS) == pytest.approx(0.9, abs=1e-12)
    assert efficacy([7, 0, 0], [0.0, 0.5, 1.0]) == pytest.approx(1.0)  # free first exit: 1


def test_no_early_exit():
    # y = [0, 0, 0, 1]: only the last segment, .5 * (1 - c_{K-1})
    assert efficacy([0, 0, 4], COSTS) == pytest.approx(0.25, abs=1e-12)
    # ResNet-56-like: the last IC costs as much as the network, so "none exit" is 0
    assert efficacy([0, 0, 0, 9], [0.3, 0.6, 1.0, 1.0]) == pytest.approx(0.0, abs=1e-12)


def test_single_exit_network():
    assert efficacy([5], [1.0]) == pytest.approx(0.5)  # x = [0, 1], y = [0, 1]


def test_indices_and_counts_agree():
    idx = torch.tensor([0, 1, 1, 2])
    assert exit_counts(idx, 3).tolist() == [1, 2, 1]
    assert efficacy(idx, COSTS) == pytest.approx(efficacy([1, 2, 1], COSTS))
    assert efficacy(np.array([2, 0, 1, 1, 0]), COSTS) == pytest.approx(efficacy([2, 2, 1], COSTS))
    # exactly K inputs is ambiguous: say they are indices
    assert efficacy([0, 0, 2], COSTS, indices=True) == pytest.approx(efficacy([2, 0, 1], COSTS))
    assert efficacy([0, 0, 2], COSTS) == pytest.approx(efficacy([0, 0, 2], COSTS, indices=False))


def test_scale_invariance_and_reduction():
    assert efficacy([10, 20, 10], COSTS) == pytest.approx(efficacy([1, 2, 1], COSTS))
    assert efficacy_reduction(0.8, 0.2) == pytest.approx(0.75)
    assert efficacy_reduction(0.5, 0.5) == 0.0
    with pytest.raises(DeepslothError):
        efficacy_reduction(0.0, 0.1)


def test_mean_cost():
    assert mean_cost([1, 2, 1], COSTS) == pytest.approx((0.2 + 1.0 + 1.0) / 4)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(DeepslothError, match="at least one input"):
        efficacy([0, 0, 0], COSTS)
    with pytest.raises(DeepslothError, match="exit indices"):
        efficacy(torch.tensor([0, 5, 1, 1]), COSTS)
