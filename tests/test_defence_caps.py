"""Compute caps (deepsloth.defences.caps): no input runs past the cap, in the batched evaluation,
the calibration sweep and the early-exit runtime alike; inputs that leave before the cap are
untouched; forced inputs answer with the most confident exit seen so far."""
from __future__ import annotations

import json

import pytest
import torch

from deepsloth.defences.caps import (ExitCap, LatencyCap, cap_cost, capped_worst_case_counts,
                                     latency_cap_exit, most_confident_exit)
from deepsloth.errors import DeepslothError
from deepsloth.exits.calibrate import calibrate_thresholds, calibration_for, threshold_sweep
from deepsloth.exits.evaluate import evaluate_threshold
from deepsloth.exits.forward import ExitOutputs, collect_exit_outputs
from deepsloth.exits.policies import ConfidencePolicy, exit_stats, make_policy
from deepsloth.exits.runtime import EarlyExitRunner, compare_with_batched
from deepsloth.metrics.latency import LatencyModel

from test_exits_runtime import Opaque, make_images, tiny_sdn

pytestmark = pytest.mark.usefixtures("one_thread")

POLICIES = ["confidence", "entropy", "patience"]


def outputs_of(logits: torch.Tensor) -> ExitOutputs:
    return ExitOutputs(*exit_stats(logits))


def random_logits(k=6, n=300, c=5, seed=0, scale=2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, n, c, generator=g) * scale


def thresholds(name):
    return [1.0, 2.0, 3.0, 4.0] if name == "patience" else [0.0, 0.3, 0.6, 0.9, 0.99, 1.0]


def reference_answer(out: ExitOutputs, base_idx: torch.Tensor, k: int) -> torch.Tensor:
    """The answer rule written out input by input, independently of the implementation."""
    ans = []
    for j in range(len(out)):
        i = int(base_idx[j])
        if i <= k:
            ans.append(int(out.prediction[i, j]))
        else:
            conf = out.confidence[:k + 1, j].tolist()
            best = max(range(k + 1), key=lambda e: (conf[e], e))   # ties: the later exit
            ans.append(int(out.prediction[best, j]))
    return torch.tensor(ans)


# ----------------------------------------------------------------------------- the rule by hand

def hand_outputs():
    """K = 4 exits, 5 inputs."""
    conf = torch.tensor([[0.90, 0.40, 0.30, 0.50, 0.20],
                         [0.95, 0.60, 0.85, 0.50, 0.30],
                         [0.30, 0.50, 0.10, 0.20, 0.81],
                         [0.99, 0.99, 0.99, 0.99, 0.99]])
    pred = torch.tensor([[1, 1, 2, 3, 0],
                         [1, 2, 0, 1, 1],
                         [2, 3, 1, 2, 2],
                         [3, 3, 3, 3, 3]])
    return ExitOutputs(conf, pred, torch.zeros_like(conf))


def test_the_answer_rule_on_a_constructed_example():
    out = hand_outputs()
    base = ConfidencePolicy()
    assert base.exit_index(out, 0.8).tolist() == [0, 3, 1, 3, 2]
    idx, pred = ExitCap(1).exit_predictions(out, 0.8)
    assert idx.tolist() == [0, 1, 1, 1, 1]
    # input 0 leaves at 0 on its own; 1: forced at 1, most confident of (0.40, 0.60) is exit 1;
    # 2: the base policy fires at 1 itself (0.85), so it answers for itself; 3: forced, a tie
    # (0.50, 0.50) goes to the later exit 1; 4: forced, exit 1 (0.30) beats exit 0 (0.20)
    assert pred.tolist() == [1, 2, 0, 1, 1]
    idx, pred = ExitCap(2).exit_predictions(out, 0.8)
    assert idx.tolist() == [0, 2, 1, 2, 2]
    # input 1: forced at 2, most confident of (0.4, 0.6, 0.5) is exit 1; input 3: forced at 2, most
    # confident of (0.5, 0.5, 0.2) is exit 1 (the later of the tie); input 4 fires at 2 itself (0.81)
    # and keeps exit 2's prediction
    assert pred.tolist() == [1, 2, 0, 1, 2]
    idx, pred = ExitCap(0).exit_predictions(out, 0.8)
    assert idx.tolist() == [0] * 5 and pred.tolist() == out.prediction[0].tolist()


def test_a_forced_input_answers_from_the_most_confident_earlier_exit():
    # the cap exit itself is the least confident: the answer comes from exit 0
    out = ExitOutputs(torch.tensor([[0.7], [0.2], [0.4], [1.0]]), torch.tensor([[5], [6], [7], [8]]),
                      torch.zeros(4, 1))
    assert ExitCap(2).exit_predictions(out, 0.9) == (torch.tensor([2]), torch.tensor([5]))
    assert ExitCap(2).exit_index(out, 0.9).tolist() == [2]
    assert most_confident_exit(torch.tensor([[0.5, 0.1], [0.5, 0.3], [0.2, 0.3]])).tolist() == [1, 2]


# ----------------------------------------------------------------------------- random and adversarial-like logits

@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_never_past_the_cap_and_early_inputs_unaffected(name, seed):
    out = outputs_of(random_logits(seed=seed))
    base = make_policy(name, num_classes=5)
    costs = [0.1, 0.25, 0.4, 0.6, 0.8, 1.0]
    labels = torch.randint(0, 5, (len(out),), generator=torch.Generator().manual_seed(seed))
    for k in range(out.num_exits - 1):
        cap = ExitCap(k, base)
        for q in thresholds(name):
            base_idx, base_pred = base.exit_predictions(out, q)
            idx, pred = cap.exit_predictions(out, q)
            assert int(idx.max()) <= k
            assert torch.equal(idx, base_idx.clamp(max=k))
            assert torch.equal(cap.exit_index(out, q), idx)
            early = base_idx <= k
            assert torch.equal(pred[early], base_pred[early])
            assert torch.equal(pred, reference_answer(out, base_idx, k))
            counts = evaluate_threshold(out, labels, costs, q, cap)["exit_counts"]
            assert counts[k + 1:] == [0] * (out.num_exits - k - 1) and sum(counts) == len(out)
            base_counts = torch.bincount(base_idx, minlength=out.num_exits).tolist()
            assert counts[:k] == base_counts[:k] and counts[k] == sum(base_counts[k:])
        for row in threshold_sweep(out, labels, cap):
            assert row["exit_counts"][k + 1:] == [0] * (out.num_exits - k - 1)


def test_adversarial_like_inputs_are_stopped_at_the_cap():
    """Every IC uniform (the DeepSloth goal), or equally unsure with different guesses: uncapped,
    all inputs reach the final exit; capped at k, all leave at k."""
    k_exits, n, c = 6, 40, 10
    logits = torch.zeros(k_exits, n, c)
    logits[-1, torch.arange(n), torch.arange(n) % c] = 10.0     # a confident final exit
    uniform = outputs_of(logits)
    flat = logits.clone()
    for i in range(k_exits - 1):                                 # same confidence, exit i guesses class i
        flat[i, :, i] = 0.5
    unsure = outputs_of(flat)
    for name in POLICIES:
        base = make_policy(name, num_classes=c)
        q = 2.0 if name == "patience" else 0.5
        for k in range(k_exits - 1):
            cap = ExitCap(k, base)
            assert base.exit_index(unsure, q).tolist() == [k_exits - 1] * n
            idx, pred = cap.exit_predictions(unsure, q)
            assert idx.tolist() == [k] * n
            assert pred.tolist() == [k] * n                     # the tie goes to the later exit: exit k
            if name != "patience":                              # uniform ICs all predict class 0: patience fires
                assert base.exit_index(uniform, q).tolist() == [k_exits - 1] * n
                assert cap.exit_index(uniform, q).tolist() == [k] * n


@pytest.mark.parametrize("name", POLICIES)
def test_runtime_view_matches_batched_view(name):
    """fire_last / answer on growing histories (the runtime) equal fire_mask / exit_predictions."""
    logits = random_logits(k=6, n=80, seed=3)
    out = outputs_of(logits)
    conf, pred, ent = out.confidence, out.prediction, out.entropy
    for k in (0, 2, 4):
        cap = ExitCap(k, make_policy(name, num_classes=5))
        for q in thresholds(name)[1:4]:
            full = cap.fire_mask(conf[:-1], pred[:-1], ent[:-1], q)
            idx, ans = cap.exit_predictions(out, q)
            for i in range(k + 1):
                h = (list(conf[:i + 1]), list(pred[:i + 1]), list(ent[:i + 1]))
                assert torch.equal(cap.fire_last(*h, q), full[i])
                leaving = idx == i
                assert torch.equal(cap.answer(*h, q)[leaving], ans[leaving])


# ----------------------------------------------------------------------------- invariants

def test_loosest_threshold_the_cap_changes_nothing():
    out = outputs_of(random_logits(seed=4))
    for k in range(out.num_exits - 1):
        a = ExitCap(k).exit_predictions(out, 0.0)
        b = ConfidencePolicy().exit_predictions(out, 0.0)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_cap_at_the_last_ic_with_a_strict_threshold():
    """k = K-2: only inputs bound for the final exit move, one exit earlier; with a threshold no IC
    reaches, every input leaves at K-2 and the capped policy is the "most confident IC" rule."""
    logits = random_logits(k=5, n=400, c=10, seed=5, scale=1.5)
    out = outputs_of(logits)
    labels = torch.randint(0, 10, (400,), generator=torch.Generator().manual_seed(5))
    k = out.num_exits - 2
    base, cap = ConfidencePolicy(), ExitCap(k)
    costs = [0.2, 0.4, 0.6, 0.8, 1.0]
    for q in (0.3, 0.6, 0.9):
        b = evaluate_threshold(out, labels, costs, q, base)["exit_counts"]
        c = evaluate_threshold(out, labels, costs, q, cap)["exit_counts"]
        assert c == b[:k] + [b[k] + b[k + 1], 0]
    strict = 1.0
    assert bool((out.confidence[:-1] < strict).all())
    assert base.exit_index(out, strict).tolist() == [k + 1] * 400
    idx, pred = cap.exit_predictions(out, strict)
    assert idx.tolist() == [k] * 400
    best = out.confidence[:-1].flip(0).argmax(0)            # first maximum from the back: the later exit on ties
    ensemble = out.prediction[:-1].flip(0).gather(0, best[None])[0]
    assert torch.equal(pred, ensemble)
    res = evaluate_threshold(out, labels, costs, strict, cap)
    assert res["accuracy"] == int((ensemble == labels).sum()) / 400
    assert res["mean_cost"] == pytest.approx(cap_cost(costs, k))


def staircase(n=3000, k_exits=6, c=10, seed=0):
    """Synthetic clean outputs: easy inputs are recognised (confidently) from the first exit on, hard
    ones only deeper; every exit is more accurate than the one before."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    easy = torch.rand(n, generator=g)
    strength = torch.linspace(0.0, 3.0, k_exits)[:, None] + 5.0 * easy[None] ** 2
    logits = torch.randn(k_exits, n, c, generator=g)
    logits[:, torch.arange(n), y] += strength
    return outputs_of(logits), y


def test_clean_accuracy_cost_is_bounded():
    """Only inputs the policy sends past k change their answer, so capping at k costs at most the
    fraction of clean inputs that go past k. Rule: the cap at the first exit by which the calibrated
    policy (RAD 15%) already sends >= 90% of clean inputs lowers clean accuracy by <= 10 points
    (on this fixture: by less than 3)."""
    out, y = staircase()
    acc = out.accuracy(y)
    assert acc == sorted(acc) and acc[-1] - acc[0] > 0.3       # later exits really are more accurate
    costs = [(i + 1) / out.num_exits for i in range(out.num_exits)]
    q = calibrate_thresholds(out, y, rads=(15,))["15"]["threshold"]
    base = evaluate_threshold(out, y, costs, q)
    n = len(y)
    cumulative = torch.tensor(base["exit_counts"]).cumsum(0).tolist()
    for k in range(out.num_exits - 1):
        capped = evaluate_threshold(out, y, costs, q, ExitCap(k))
        past = n - cumulative[k]
        drop = round(base["accuracy"] * n) - round(capped["accuracy"] * n)   # in inputs
        assert drop <= past
        assert capped["mean_cost"] <= base["mean_cost"] + 1e-12
    k90 = next(k for k in range(out.num_exits - 1) if cumulative[k] >= 0.9 * n)
    capped = evaluate_threshold(out, y, costs, q, ExitCap(k90))
    drop_points = 100 * (base["accuracy"] - capped["accuracy"])
    assert cumulative[k90] < n and drop_points > 0        # the cap bites on clean inputs too
    assert drop_points <= 10
    assert drop_points <= 3    # forced inputs are the hard ones, but the most confident exit often knows
    # a cap that bites hard does cost accuracy: the bound is not vacuous on this fixture
    first = evaluate_threshold(out, y, costs, q, ExitCap(0))
    assert base["accuracy"] - first["accuracy"] > 0.05


# ----------------------------------------------------------------------------- the early-exit runtime

@pytest.fixture(scope="module")
def sdn_setup():
    model = tiny_sdn()
    images = make_images(40)
    return model, images, collect_exit_outputs(model, images, batch_size=50)


@pytest.mark.parametrize("batch_size", [1, 7, 40])
@pytest.mark.parametrize("name", ["confidence", "patience"])
def test_runtime_honours_the_cap(sdn_setup, batch_size, name):
    model, images, outputs = sdn_setup
    k_exits = outputs.num_exits
    forced = 0
    for k in (0, 2, k_exits - 2):
        for q in ((2.0, 3.0) if name == "patience" else (0.7, 0.99)):
            cap = ExitCap(k, name)
            res = EarlyExitRunner(model, q, policy=cap).run(images, batch_size=batch_size, warmup=0)
            assert res.early_exit and int(res.exit_index.max()) <= k
            idx, pred = cap.exit_predictions(outputs, q)
            report = compare_with_batched(res, outputs, q, cap)
            assert report["mismatch"] == 0, report
            assert torch.equal(res.exit_index, idx) and torch.equal(res.prediction, pred)
            assert res.exit_counts(k_exits)[k + 1:] == [0] * (k_exits - k - 1)
            base_idx = make_policy(name).exit_index(outputs, q)
            forced += int((base_idx > k).sum())
            moved = (base_idx > k) & (pred != outputs.prediction[k])
            forced += 1000 * int(moved.any())     # some answer came from an earlier exit than k
    assert forced > 1000    # the caps bit, and the fallback answer was exercised


def test_runtime_really_stops_at_the_cap(sdn_setup):
    model, images, _ = sdn_setup
    k = 1
    seen = {i: 0 for i in range(len(model.blocks))}
    hooks = [b.register_forward_hook(lambda m, inp, o, i=i: seen.__setitem__(i, seen[i] + o.shape[0]))
             for i, b in enumerate(model.blocks)]
    head = []
    hooks.append(model.head.register_forward_hook(lambda m, inp, o: head.append(o.shape[0])))
    try:
        for bs in (1, 16):
            res = EarlyExitRunner(model, 1.0, policy=ExitCap(k)).run(images, batch_size=bs, warmup=0)
            assert res.exit_index.tolist() == [k] * len(images)
    finally:
        for h in hooks:
            h.remove()
    assert seen[0] > 0 and seen[k] > 0
    assert all(seen[i] == 0 for i in range(k + 1, len(model.blocks))) and not head


def test_runtime_fallback_for_opaque_models(sdn_setup):
    model, images, outputs = sdn_setup
    cap = ExitCap(1)
    res = EarlyExitRunner(Opaque(model), 0.99, policy=cap).run(images, batch_size=8, warmup=0)
    assert not res.early_exit
    idx, pred = cap.exit_predictions(outputs, 0.99)
    assert torch.equal(res.exit_index, idx) and torch.equal(res.prediction, pred)


def test_runtime_with_attached_exits():
    from test_attach_exits import TinyViT, images as vit_images
    from deepsloth.models.attach import attach_exits
    torch.manual_seed(2)
    model = attach_exits(TinyViT(), at=["blocks.0", "blocks.1", "blocks.2"], num_classes=4, seed=0).eval()
    x, _ = vit_images(24)
    outputs = collect_exit_outputs(model, x)
    for bs in (1, 24):
        for k in (0, 1, 2):
            cap = ExitCap(k)
            q = float(outputs.confidence[:k + 1].max()) + 0.01          # the base policy never fires
            res = EarlyExitRunner(model, min(q, 1.0), policy=cap).run(x, batch_size=bs, warmup=0)
            report = compare_with_batched(res, outputs, min(q, 1.0), cap)
            assert res.exit_index.tolist() == [k] * len(x)
            assert report["mismatch"] == 0, report


def test_a_cap_past_the_last_ic_is_an_error(sdn_setup):
    model, images, outputs = sdn_setup
    k_exits = outputs.num_exits
    with pytest.raises(DeepslothError, match="not an internal classifier"):
        ExitCap(k_exits - 1).exit_index(outputs, 0.5)
    with pytest.raises(DeepslothError, match="not an internal classifier"):
        ExitCap(k_exits - 1).exit_predictions(outputs, 0.5)
    with pytest.raises(DeepslothError, match="not an internal classifier"):
        EarlyExitRunner(model, 0.999, policy=ExitCap(k_exits - 1)).run(images[:2], warmup=0)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(DeepslothError):
            ExitCap(bad)


def test_thresholds_are_those_of_the_base_policy(sdn_setup):
    model, images, outputs = sdn_setup
    cap = ExitCap(2, "patience")
    assert cap.grid(outputs.num_exits) == make_policy("patience").grid(outputs.num_exits)
    res = EarlyExitRunner(model, 2, policy=cap).run(images[:4], warmup=0)   # patience 2 is accepted
    assert int(res.exit_index.max()) <= 2
    with pytest.raises(DeepslothError):
        EarlyExitRunner(model, 2, policy=ExitCap(2))                        # not a confidence threshold


# ----------------------------------------------------------------------------- cache keys, latency, cost

def test_describe_keeps_capped_and_uncapped_results_apart(tmp_path):
    descriptions = [ConfidencePolicy().describe(), ExitCap(2).describe(), ExitCap(3).describe(),
                    ExitCap(2, "patience").describe(), ExitCap(2, "entropy", num_classes=10).describe()]
    assert len({json.dumps(d, sort_keys=True) for d in descriptions}) == len(descriptions)
    assert ExitCap(2).describe()["cap"] == 2 and ExitCap(2).describe()["base"] == {"name": "confidence"}
    # the calibration cache: a capped sweep never reuses the uncapped one, and vice versa
    out, y = staircase(n=500)
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    images = torch.zeros(len(y), 3, 2, 2, dtype=torch.uint8)
    args = (tmp_path, None, None, images, y)
    _, first = calibration_for(*args, rads=(5,), policy="confidence", outputs=out)
    _, capped = calibration_for(*args, rads=(50,), policy=ExitCap(2), outputs=out)
    assert not first["cached"] and not capped["cached"]
    assert all(r["exit_counts"][3:] == [0] * (out.num_exits - 3) for r in capped["sweep"])
    _, again = calibration_for(*args, rads=(5,), policy="confidence", outputs=out)
    _, capped_again = calibration_for(*args, rads=(50,), policy=ExitCap(2), outputs=out)
    assert again["cached"] and capped_again["cached"]
    assert again["sweep"] == first["sweep"] and capped_again["sweep"] == capped["sweep"] != first["sweep"]


def hand_latency() -> LatencyModel:
    """5 exits; the device runs exits 1-2 (10 and 20 ms); offloading costs 10 ms upload + 20 ms RTT,
    then the server adds 1 ms per exit: T = 10, 20, 51, 52, 53 ms (1-based exits 1..5)."""
    return LatencyModel(device_times=[0.01, 0.02, 0.03, 0.04, 0.05],
                        server_times=[0.001, 0.002, 0.003, 0.004, 0.005], split=2,
                        tx_bytes=12_500, bandwidth_bps=10e6, rtt_s=0.02)


def test_latency_cap_picks_the_deepest_exit_within_budget():
    lat = hand_latency()
    assert [round(1000 * t, 6) for t in lat.exit_latency()] == [10, 20, 51, 52, 53]
    for budget, k in [(10, 0), (19.9, 0), (20, 1), (50.9, 1), (51, 2), (52.5, 3)]:
        assert latency_cap_exit(budget, lat) == k, budget
        cap = LatencyCap(budget, lat)
        assert cap.k == k and isinstance(cap, ExitCap)
        assert cap.describe()["budget_ms"] == budget and cap.describe()["cap"] == k
        assert cap.worst_case_ms <= budget + 1e-9
    assert latency_cap_exit(53, lat) is None
    with pytest.raises(DeepslothError, match="nothing to cap"):
        LatencyCap(60, lat)
    with pytest.raises(DeepslothError, match="below the latency of exit 0"):
        LatencyCap(9.9, lat)
    assert LatencyCap(20, lat).describe() != ExitCap(1).describe()
    # it behaves as ExitCap(k)
    out = outputs_of(random_logits(k=5, seed=6))
    a, b = LatencyCap(51, lat).exit_predictions(out, 0.9), ExitCap(2).exit_predictions(out, 0.9)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # measured times need not be monotone: every exit up to the cap must meet the budget
    bumpy = LatencyModel([0.01, 0.03, 0.02, 0.04, 0.05], [0.0] * 5, split=5, tx_bytes=0)
    assert latency_cap_exit(25, bumpy) == 0 and latency_cap_exit(30, bumpy) == 2


def test_cap_cost_and_worst_case_counts():
    assert cap_cost([10, 20, 30, 40], 1) == 0.5
    assert cap_cost([0.25, 0.5, 0.75, 1.0], 2) == 0.75
    with pytest.raises(DeepslothError):
        cap_cost([1, 2], 2)
    assert capped_worst_case_counts(5, 2) == [0, 0, 1, 0, 0]
    lat = hand_latency()
    assert lat.expected_latency(capped_worst_case_counts(5, 1)) == pytest.approx(0.02)
    with pytest.raises(DeepslothError):
        capped_worst_case_counts(5, 4)
