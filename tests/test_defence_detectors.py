"""Slowdown detectors (deepsloth.defences.detectors) on synthetic data: exit logits whose internal
classifiers are peaked (clean) or near-uniform (attacked), smooth images with and without
high-frequency noise, and exit-index streams drawn from two exit distributions."""
from __future__ import annotations

import json

import pytest
import torch

from deepsloth.defences.detectors import (SHARE_GRID, ExitStatsDetector, InputDetector, StreamMonitor,
                                          load_detector, upper_quantile_threshold)
from deepsloth.errors import DeepslothError

pytestmark = pytest.mark.usefixtures("one_thread")

K, C = 4, 10


def exit_logits(n: int, attacked: bool, seed: int, k: int = K, c: int = C):
    """K exit logits [n, c]: clean exits have one class ahead by a random margin (some inputs are
    hard, margin near 0.5); attacked internal classifiers are small noise (near-uniform softmax).
    The final exit is peaked for both."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(k):
        z = torch.randn(n, c, generator=g)
        if attacked and i < k - 1:
            z = 0.3 * z
        else:
            y = torch.randint(0, c, (n,), generator=g)
            z[torch.arange(n), y] += torch.rand(n, generator=g) * 6 + 0.5 * i
        out.append(z)
    return out


def smooth_images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=32, mode="bilinear",
                                           align_corners=False)


def with_noise(x: torch.Tensor, seed: int, eps: float = 8 / 255) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, x.shape, generator=g).float() * 2 - 1
    return (x + eps * sign).clamp(0, 1)


def one_line(exc_info, *words):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


@pytest.fixture(scope="module")
def exit_detector():
    return ExitStatsDetector().fit(exit_logits(1000, False, 1), exit_logits(1000, True, 2))


@pytest.fixture(scope="module")
def input_detector():
    clean, attacked = smooth_images(300, 10), with_noise(smooth_images(300, 11), 12)
    return InputDetector(width=8, seed=0).fit(clean, attacked, epochs=3, batch_size=32, lr=3e-3, seed=0)


# ---------------------------------------------------------------- thresholds

def test_calibrate_tie_rule_on_known_scores():
    d = ExitStatsDetector()
    scores = torch.arange(100.0)
    assert d.calibrate(scores, 0.05) == 94.0          # the 6th largest: 95..99 (5 = 5%) are above
    assert d.thresholds[0.05] == 94.0
    assert d.false_positive_rate(scores, 0.05) == pytest.approx(0.05)
    assert d.flag(torch.tensor([94.0, 94.5]), 0.05).tolist() == [False, True]
    assert d.calibrate(scores, 0.004) == 99.0         # floor(0.4) = 0: nothing clean above
    assert d.false_positive_rate(scores, 0.004) == 0.0
    d.calibrate(torch.full((50,), 3.0), 0.1)            # all tied: none strictly above, rate 0
    assert d.false_positive_rate(torch.full((50,), 3.0), 0.1) == 0.0
    assert upper_quantile_threshold(torch.tensor([1.0, 2.0, 3.0, 4.0]), 0.5) == 2.0


# ---------------------------------------------------------------- exit-stats detector

def test_exit_stats_features_are_confidence_and_normalised_entropy():
    d = ExitStatsDetector()
    uniform = [torch.zeros(2, C)] * K
    f = d.features(uniform)
    assert f.shape == (2, 2 * (K - 1))                  # the final exit is not a feature
    assert torch.allclose(f[:, 0::2], torch.full((2, K - 1), 1 / C))
    assert torch.allclose(f[:, 1::2], torch.ones(2, K - 1))
    onehot = [torch.full((1, C), -1e4).index_fill(1, torch.tensor([3]), 1e4)] * K
    assert torch.allclose(d.features(onehot), torch.tensor([[1.0, 0.0] * (K - 1)]), atol=1e-6)
    assert ExitStatsDetector(stats=("entropy",)).features(uniform).shape == (2, K - 1)


def test_exit_stats_detects_near_uniform_internal_classifiers(exit_detector):
    d = exit_detector
    cal = d.score(exit_logits(2000, False, 3)).detach()
    attacked = d.score(exit_logits(2000, True, 4)).detach()
    for fpr in (0.05, 0.01):
        d.calibrate(cal, fpr)
        assert d.false_positive_rate(cal, fpr) <= fpr
    assert d.detection_rate(attacked, 0.05) >= 0.9       # measured 1.0
    assert d.detection_rate(attacked, 0.01) >= 0.9       # measured 1.0
    assert d.train_accuracy > 0.95


def test_exit_stats_false_positives_on_held_out_clean_inputs(exit_detector):
    d = exit_detector
    d.calibrate(d.score(exit_logits(2000, False, 3)).detach(), 0.05)
    d.calibrate(d.score(exit_logits(2000, False, 3)).detach(), 0.01)
    held_out = d.score(exit_logits(2000, False, 5)).detach()    # fresh draws, same distribution
    assert abs(d.false_positive_rate(held_out, 0.05) - 0.05) <= 0.02   # measured 0.044
    assert abs(d.false_positive_rate(held_out, 0.01) - 0.01) <= 0.01   # measured 0.008


def test_exit_stats_fit_is_deterministic(exit_detector):
    again = ExitStatsDetector().fit(exit_logits(1000, False, 1), exit_logits(1000, True, 2), seed=0)
    x = exit_logits(50, True, 6)
    assert torch.equal(again.score(x), exit_detector.score(x))


def test_exit_stats_score_is_differentiable(exit_detector):
    logits = [t.requires_grad_() for t in exit_logits(16, False, 7)]
    exit_detector.score(logits).sum().backward()
    for t in logits[:-1]:
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    assert logits[-1].grad is None or not logits[-1].grad.any()   # the final exit plays no part
    stacked = torch.stack(exit_logits(4, True, 8)).requires_grad_()   # one tensor [K, N, C] works too
    exit_detector.score(stacked).sum().backward()
    assert torch.isfinite(stacked.grad).all() and stacked.grad[:-1].abs().sum() > 0


def test_exit_stats_scores_from_exit_outputs_match(exit_detector):
    from deepsloth.exits.policies import exit_stats
    from deepsloth.exits.forward import ExitOutputs
    logits = exit_logits(30, True, 9)
    stats = [exit_stats(z) for z in logits]
    outputs = ExitOutputs(torch.stack([s[0] for s in stats]), torch.stack([s[1] for s in stats]),
                          torch.stack([s[2] for s in stats]))
    assert torch.allclose(exit_detector.score_outputs(outputs), exit_detector.score(logits), atol=1e-5)


# ---------------------------------------------------------------- input detector

def test_input_detector_learns_high_frequency_noise(input_detector):
    d = input_detector
    assert len(d.history) == 3 and d.history[-1] < d.history[0]
    with torch.no_grad():
        cal = d.score(smooth_images(400, 20))
        held_out = d.score(smooth_images(400, 21))
        attacked = d.score(with_noise(smooth_images(400, 22), 23))
    d.calibrate(cal, 0.05)
    fpr = d.false_positive_rate(held_out, 0.05)
    assert fpr <= 0.05 + 0.04                             # measured 0.065 (400 held-out images)
    assert d.detection_rate(attacked, 0.05) >= 0.8        # measured 1.0


def test_input_detector_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    clean, attacked = smooth_images(32, 30), with_noise(smooth_images(32, 31), 32)
    a = InputDetector(width=4, seed=1).fit(clean, attacked, epochs=1, batch_size=16, seed=2)
    b = InputDetector(width=4, seed=1).fit(clean, attacked, epochs=1, batch_size=16, seed=2)
    assert torch.rand(1) == before
    with torch.no_grad():
        assert torch.equal(a.score(clean), b.score(clean))
    c = InputDetector(width=4, seed=1).fit(clean, attacked, epochs=1, batch_size=16, seed=3)
    with torch.no_grad():
        assert not torch.equal(a.score(clean), c.score(clean))


def test_input_detector_score_is_differentiable_and_batched(input_detector):
    x = with_noise(smooth_images(6, 40), 41).requires_grad_()
    s = input_detector.score(x, batch_size=4)
    assert s.shape == (6,)
    s.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.allclose(input_detector.score(x), s, atol=1e-5)
        u8 = (smooth_images(3, 42) * 255).round().to(torch.uint8)
        assert torch.allclose(input_detector.score(u8), input_detector.score(u8.float() / 255))


# ---------------------------------------------------------------- saving

def test_save_load_round_trip(tmp_path, exit_detector, input_detector):
    exit_detector.calibrate(exit_detector.score(exit_logits(500, False, 3)).detach(), 0.05)
    input_detector.calibrate(torch.linspace(-3, 3, 100), 0.01)
    logits, images = exit_logits(40, True, 50), smooth_images(8, 51)
    for det, x in ((exit_detector, logits), (input_detector, images)):
        folder = det.save(tmp_path / det.name)
        assert sorted(p.name for p in folder.iterdir()) == ["detector.json", "detector.safetensors"]
        back = type(det).load(folder)
        assert type(back) is type(det) and back.describe() == det.describe()
        assert back.thresholds == det.thresholds
        with torch.no_grad():
            assert torch.equal(back.score(x), det.score(x))
        assert type(load_detector(folder)) is type(det)
    with pytest.raises(DeepslothError) as e:
        InputDetector.load(tmp_path / exit_detector.name)
    one_line(e, "exit-stats")
    saved = json.loads((tmp_path / "input" / "detector.json").read_text())
    assert saved["name"] == "input" and saved["settings"] == {"channels": 3, "width": 8, "seed": 0}


# ---------------------------------------------------------------- stream monitor

P_CLEAN = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.1])    # exits 0..4 (4 = final)
P_ATTACKED = torch.tensor([0.05, 0.05, 0.1, 0.2, 0.6])


def draws(p: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    return torch.multinomial(p, n, replacement=True, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def monitor_data():
    return draws(P_CLEAN, 4000, 60), draws(P_ATTACKED, 2000, 61), draws(P_CLEAN, 20000, 62)


def test_stream_monitor_picks_late_exit_and_counts_windows(monitor_data):
    clean, _, _ = monitor_data
    m = StreamMonitor(window=50).fit(clean, 5, 0.01)
    reach = [(clean >= j).double().mean().item() for j in range(5)]
    assert reach[1] > 0.5 >= reach[2] and m.late_from == 2           # smallest exit at most half reach
    assert 0 < m.max_late < 50 and m.threshold == m.max_late / 50
    assert m.calibration_rate <= 0.01
    stream = torch.tensor([0] * 60 + [4] * 60)
    counts = m.late_counts(stream)
    assert len(counts) == 120 - 50 + 1 and counts[0] == 0 and counts[-1] == 50 and counts[35] == 25
    assert torch.equal(m.alarms(stream), counts > m.max_late)
    assert len(m.alarms(stream[:49])) == 0
    both = m.late_counts(torch.stack([stream, stream.flip(0)]))     # [S, L]: S streams
    assert both.shape == (2, 71) and torch.equal(both[0], counts) and torch.equal(both[1], counts.flip(0))
    assert StreamMonitor(window=10, late_from=4).fit(clean, 5).late_from == 4
    assert StreamMonitor(window=10).fit(torch.full((100,), 4), 5).late_from == 4   # all at the final


def test_stream_monitor_false_alarms_on_fresh_clean_streams(monitor_data):
    clean, _, held_out = monitor_data
    for target in (0.01, 0.05):
        m = StreamMonitor(window=50).fit(clean, 5, target, seed=0)
        fresh = m.false_alarm_rate(clean, seed=1, streams=20)            # fresh shuffles, same inputs
        assert fresh <= target + 0.005 and abs(fresh - m.calibration_rate) <= 0.005
        held = m.false_alarm_rate(held_out, seed=2, streams=3)           # other draws of the same traffic
        assert held <= target + 0.015
    # measured: target 0.01 -> calibration 0.0059, fresh 0.0047, held out 0.0074;
    # target 0.05 -> 0.0452, 0.0470, 0.0482


def test_stream_monitor_detects_and_bounds_the_adaptive_share(monitor_data):
    clean, attacked, held_out = monitor_data
    m = StreamMonitor(window=50).fit(clean, 5, 0.01)
    assert m.detection(held_out, attacked, 1.0, streams=3) == 1.0
    assert m.detection(clean, torch.full((10,), 4), 1.0, streams=2) == 1.0
    assert m.detection(clean, attacked, 0.0, seed=4) == m.false_alarm_rate(clean, seed=4)
    curve = m.alarm_curve(clean, attacked, seed=4)
    assert [p["share"] for p in curve] == list(SHARE_GRID)
    rates = [p["alarm_rate"] for p in curve]
    assert rates[-1] == 1.0 and rates[4] > rates[0]
    for rate in (None, 0.1, 0.5):
        limit = 0.01 if rate is None else rate
        share = m.max_undetected_share(clean, attacked, rate, seed=4)
        assert m.detection(clean, attacked, share, seed=4) <= limit
        assert share == 1.0 or m.detection(clean, attacked, round(share + 0.05, 2), seed=4) > limit
    # measured: shares 0.0 / 0.15 / 0.3 for rates 0.01 / 0.1 / 0.5 (alarm rate at share 0: 0.0054)
    assert m.max_undetected_share(clean, attacked, 0.5, seed=4) > 0.05   # a loose budget hides more


def test_stream_monitor_save_load(tmp_path, monitor_data):
    clean, attacked, _ = monitor_data
    m = StreamMonitor(window=40).fit(clean, 5, 0.02, seed=3)
    back = StreamMonitor.load(m.save(tmp_path / "monitor"))
    assert back.describe() == m.describe()
    assert torch.equal(back.alarms(attacked), m.alarms(attacked))
    assert torch.equal(back.clean_histogram, m.clean_histogram)


# ---------------------------------------------------------------- errors

def test_bad_parameters_are_one_line_errors(exit_detector, input_detector):
    clean = exit_logits(20, False, 70)
    for bad in (0, 1, 1.5, -0.1, "x"):
        with pytest.raises(DeepslothError) as e:
            exit_detector.calibrate(torch.rand(10), bad)
        one_line(e, "fpr")
    with pytest.raises(DeepslothError) as e:
        exit_detector.flag(torch.rand(10), 0.3)                     # never calibrated for 0.3
    one_line(e, "calibrate")
    with pytest.raises(DeepslothError) as e:
        exit_detector.calibrate(torch.rand(2, 5), 0.1)
    one_line(e, "clean_scores")
    with pytest.raises(DeepslothError) as e:
        ExitStatsDetector().score(clean)
    one_line(e, "not fitted")
    with pytest.raises(DeepslothError) as e:
        InputDetector().score(smooth_images(2, 0))
    one_line(e, "not fitted")
    with pytest.raises(DeepslothError) as e:
        exit_detector.score(exit_logits(5, False, 0, k=3))           # fitted on 4 exits
    one_line(e, "logits_list", "4 exits")
    with pytest.raises(DeepslothError) as e:
        exit_detector.score([torch.zeros(3, C), torch.zeros(4, C)])
    one_line(e, "logits_list")
    with pytest.raises(DeepslothError) as e:
        ExitStatsDetector().fit(clean, exit_logits(20, True, 71, c=5))
    one_line(e, "attacked_logits")
    with pytest.raises(DeepslothError) as e:
        ExitStatsDetector(stats=("confidence", "margin"))
    one_line(e, "stats")
    with pytest.raises(DeepslothError) as e:
        input_detector.score(torch.zeros(2, 1, 32, 32))
    one_line(e, "x", "[N, 3, H, W]")
    with pytest.raises(DeepslothError) as e:
        InputDetector(width=4).fit(smooth_images(4, 0), torch.zeros(4, 3, 16, 16))
    one_line(e, "attacked_x")
    for kwargs, word in (({"window": 0}, "window"), ({"window": 2.5}, "window"), ({"late_from": 0}, "late_from")):
        with pytest.raises(DeepslothError) as e:
            StreamMonitor(**kwargs)
        one_line(e, word)
    idx = torch.zeros(100, dtype=torch.long)
    with pytest.raises(DeepslothError) as e:
        StreamMonitor(window=10).fit(idx, 5, false_alarm_rate=1.0)
    one_line(e, "false_alarm_rate")
    with pytest.raises(DeepslothError) as e:
        StreamMonitor(window=200).fit(idx, 5)
    one_line(e, "window")
    with pytest.raises(DeepslothError) as e:
        StreamMonitor(window=10).fit(torch.full((100,), 5), 5)
    one_line(e, "clean_exit_indices", "num_exits")
    with pytest.raises(DeepslothError) as e:
        StreamMonitor(window=10, late_from=7).fit(idx, 5)
    one_line(e, "late_from")
    with pytest.raises(DeepslothError) as e:
        StreamMonitor().alarms(idx)
    one_line(e, "not fitted")
    with pytest.raises(DeepslothError) as e:
        StreamMonitor(window=10).fit(idx, 5).detection(idx, idx, 1.5)
    one_line(e, "share")
