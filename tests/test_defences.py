"""Defences and the adaptive attacker: the adaptive attack beats the non-adaptive one where a transform blocks
gradients, EOT / BPDA gradients are finite, a cap's adaptive attack reads only the exits before the cap, every
defence and adaptive attack is reachable from the CLI and the Python API with one-line errors, and the defence
study writes a record with an adaptive column per defence that `report` renders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import colour_images, synthetic_sdn

from deepsloth.attacks.adaptive import AdaptiveDeepSloth
from deepsloth.attacks.objectives import uniform_ic_loss
from deepsloth.attacks.registry import create_attack, resolve_spec
from deepsloth.cli.main import main
from deepsloth.defences import parse_defence
from deepsloth.defences.transforms import Transformed
from deepsloth.errors import DeepslothError

pytestmark = pytest.mark.usefixtures("one_thread")


class ThreeExits(nn.Module):
    """A small CNN with two internal classifiers and a final exit, `forward_exits` as the toolkit's models."""

    def __init__(self, classes=4):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1), nn.Conv2d(16, 16, 3, 2, 1)
        self.h1, self.h2, self.h3 = nn.Linear(8, classes), nn.Linear(16, classes), nn.Linear(16, classes)
        self.calls = []

    def forward_exits(self, x, need="all"):
        self.calls.append(need)
        z1 = F.relu(self.c1(x))
        out = [self.h1(z1.mean((2, 3)))]
        if need == 0:
            return out
        z2 = F.relu(self.c2(z1))
        out.append(self.h2(z2.mean((2, 3))))
        if need == 1:
            return out
        return out + [self.h3(F.relu(self.c3(z2)).mean((2, 3)))]

    def forward(self, x):
        return self.forward_exits(x, "all")


@pytest.fixture(scope="module")
def model():
    """Trained to be confident but not certain (an 8/255 perturbation can move its exits)."""
    torch.manual_seed(0)
    net = ThreeExits()
    x, y = colour_images(256, seed=1, noise=0.6)
    x = x.float() / 255
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(20):
        opt.zero_grad()
        sum(F.cross_entropy(z, y) for z in net(x)).backward()
        opt.step()
    return net.eval()


def ic_loss(model, x, transform=None):
    with torch.no_grad():
        return float(uniform_ic_loss(model(x if transform is None else transform(x))).mean())


class RoundedInput(nn.Module):
    """The deployment as a naive white-box attacker differentiates it: 3-bit rounding, whose gradient is zero."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 7) / 7)


def test_adaptive_attack_beats_the_non_adaptive_one_where_the_transform_blocks_gradients(model):
    """Bit-depth reduction has a zero gradient almost everywhere: DeepSloth run through it (gradient masking)
    stays at its random start, the adaptive attack's straight-through gradient (BPDA) slows the deployment."""
    x = colour_images(64, seed=7, noise=0.6)[0].float() / 255
    defence = parse_defence("bitdepth:bits=3")
    masked = create_attack("deepsloth", RoundedInput(model), steps=20)(x)
    adaptive = create_attack("adaptive-deepsloth", model, defence=defence.spec, steps=20)(x)
    for out in (masked, adaptive):
        assert float((out - x).abs().max()) <= 8 / 255 + 1e-6 and 0 <= float(out.min()) <= float(out.max()) <= 1
    clean, na, ad = (ic_loss(model, v, defence.transform) for v in (x, masked, adaptive))
    assert ad < 0.9 * na and ad < 0.9 * clean
    # the gradient through the rounding is zero; BPDA's is finite and not zero
    xs = x[:4].clone().requires_grad_(True)
    assert torch.autograd.grad(uniform_ic_loss(RoundedInput(model)(xs)).sum(), xs)[0].abs().sum() == 0
    xs = x[:4].clone().requires_grad_(True)
    g = torch.autograd.grad(uniform_ic_loss(model(defence.transform(xs))).sum(), xs)[0]
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_eot_gradients_are_finite_and_average_over_draws(model):
    x = colour_images(8, seed=3)[0].float() / 255
    atk = create_attack("adaptive-deepsloth", model, defence="resize-pad:shrink=4", steps=2)
    assert atk.eot == 8 and atk.spec_params()["eot"] == 8
    atk._gen = torch.Generator().manual_seed(0)
    g = atk.input_grad(x, atk.objective, None)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    out = atk(x)
    assert float((out - x).abs().max()) <= 8 / 255 + 1e-6
    assert torch.equal(out, atk(x))   # seeded: the same call gives the same output
    with pytest.raises(DeepslothError, match="eot averages over random draws"):
        create_attack("adaptive-deepsloth", model, defence="jpeg:quality=50", eot=4)


def test_the_cap_attack_runs_only_the_exits_before_the_cap(model):
    x = colour_images(8, seed=4)[0].float() / 255
    model.calls.clear()
    create_attack("adaptive-deepsloth", model, defence="exit-cap:k=1", steps=3)(x)
    assert model.calls and set(model.calls) == {0}   # exit 0 only: the cap at exit 1 answers the rest
    model.calls.clear()
    out = create_attack("adaptive-deepsloth", model, defence="exit-cap:k=0", steps=3, random_start=False)(x)
    assert torch.equal(out, x)   # a cap at the first exit leaves the attacker nothing to slow down
    with pytest.raises(DeepslothError, match="name the exit"):
        create_attack("adaptive-deepsloth", model, defence="exit-cap:cost=0.5")


def test_transformed_keeps_the_multi_exit_contract(model):
    x = colour_images(6, seed=5)[0].float() / 255
    dep = Transformed(model, parse_defence("jpeg:quality=50").transform)
    out = dep(x)
    assert len(out) == 3 and all(o.shape == (6, 4) for o in out)


@pytest.mark.parametrize("text, message", [
    ("bogus", "unknown defence 'bogus'"), ("jpeg:quality=0", "quality"), ("exit-cap", "exactly one of k"),
    ("exit-cap:k=1,cost=0.5", "exactly one of k"), ("latency-cap", "positive budget"), ("monitor:window=1", "window"),
    ("exit-stats@0123456789ab", "no fitted detector"), ("median:size=3", "size"),
    ("x" * 5000, "unknown defence"), ("a\x00b", "unknown defence"),   # not paths this system can name
])
def test_bad_defences_are_one_line_errors(text, message):
    with pytest.raises(DeepslothError, match=message) as err:
        parse_defence(text)
    assert "\n" not in str(err.value)
    with pytest.raises(DeepslothError, match=message):
        resolve_spec("adaptive-deepsloth", defence=text)


def test_the_adaptive_attack_needs_a_defence_and_names_it_in_its_spec():
    with pytest.raises(DeepslothError, match="needs a defence"):
        resolve_spec("adaptive-deepsloth")
    a = resolve_spec("adaptive-deepsloth", defence="jpeg")
    b = resolve_spec("adaptive-deepsloth", defence="jpeg:quality=75")
    c = resolve_spec("adaptive-deepsloth", defence="jpeg:quality=50")
    assert a == b and a.id != c.id and a.params["defence"] == "jpeg:quality=75"
    assert a.id != resolve_spec("deepsloth").id and a.cell == "adaptive-deepsloth-linf-sample"
    assert isinstance(create_attack(a, ThreeExits()), AdaptiveDeepSloth)
    with pytest.raises(DeepslothError, match="monitor"):
        create_attack("adaptive-deepsloth", ThreeExits(), defence="monitor")


def test_cli_reaches_defences_with_one_line_errors(capsys):
    assert main(["attack", "--model", "mobilenet_sdn_cifar10", "--attack", "adaptive-deepsloth", "--defence", "bogus"]) != 0
    err = capsys.readouterr().err.strip()
    assert "unknown defence 'bogus'" in err and len(err.splitlines()) == 1
    assert main(["defend", "--model", "m", "--defences", "jpeg:quality=500"]) != 0
    err = capsys.readouterr().err.strip()
    assert "quality" in err and len(err.splitlines()) == 1


def test_defence_study_records_and_report(tmp_path, capsys):
    """The study on a tiny synthetic SDN (two attack steps): a record per defence, each with an adaptive column;
    caps recalibrate under the cap and never let an input past it; report writes defences.md and its figure."""
    from deepsloth.experiments.defend import load_records, run_defences
    from deepsloth.experiments.studies import defences_section

    root, model_dir, _ = synthetic_sdn(tmp_path, 40, 28, store_cost=True)   # test images 12..27: monitor traffic
    defences = ["jpeg:quality=75", "exit-cap:k=2", "exit-stats", "monitor:window=4"]
    kw = dict(n=12, out_dir=tmp_path / "out", device="cpu", data_root=str(root), fit_n=16, probe_n=6,
              rads=(50.0,), attack_options={"steps": 2, "n_images": 6})
    rows = run_defences(str(model_dir), defences, **kw)
    assert [r["defence"]["spec"] for r in rows] == ["none"] + defences
    for r in rows[1:]:
        adaptive = [r["attacks"][s].get("adaptive") for s in ("sample", "universal")]
        if r["defence"]["kind"] == "monitor":
            m = r["monitor"]["50"]
            assert 0 <= m["false_alarm_rate"] <= 1 and 0 <= m["sample"]["max_undetected_share"] <= 1
            # the deployment's clean traffic, test images after the evaluated ones: half to calibrate, half watched
            assert r["monitor_fit"]["selection"] == "the 8 after the first 12 test images in stored order"
            assert r["monitor_watch"]["selection"] == "the 8 after the first 20 test images in stored order"
        else:
            assert all(a is not None and a["attack_id"] for a in adaptive)
            assert all(a["spec"]["params"]["defence"].startswith(r["defence"]["name"]) for a in adaptive)
    cap = rows[2]
    assert cap["cap"]["exit"] == 2 and cap["clean"]["rad"]["50"]["qualified"] in (True, False)
    det = rows[3]
    assert det["detector"]["fit_n"] == 16   # thresholds from the clean traffic's first half, rates on its second
    assert det["detector"]["calibration"]["selection"] == "the 8 after the first 12 test images in stored order"
    assert det["detector"]["held_out"]["selection"] == "the 8 after the first 20 test images in stored order"
    for side in ("non_adaptive", "adaptive"):
        assert set(det["attacks"]["sample"][side]["detection"]) == {"0.01", "0.05"}
        assert all(0 <= v <= 1 for v in det["attacks"]["sample"][side]["detection"].values())
    # a rerun reads the records back
    again = run_defences(str(model_dir), defences, **kw)
    assert [r["created"] for r in again] == [r["created"] for r in rows]
    assert len(load_records(tmp_path / "out")) == len(rows)
    # a detector record whose thresholds were set on training images (no calibration of clean traffic) is made
    # again
    stale = next((tmp_path / "out").rglob("defence-exit-stats.json"))
    old = json.loads(stale.read_text())
    del old["detector"]["calibration"]
    stale.write_text(json.dumps(old))
    redone = run_defences(str(model_dir), ["exit-stats"], **kw)[1]
    assert redone["detector"]["calibration"]["split"] == "test"
    assert json.loads(stale.read_text())["detector"]["calibration"]["n"] == 8
    # ... and so is a stream monitor's calibrated on training images (no monitor_fit)
    stale = next((tmp_path / "out").rglob("defence-monitor-window-4.json"))
    old = json.loads(stale.read_text())
    del old["monitor_fit"]
    stale.write_text(json.dumps(old))
    assert run_defences(str(model_dir), ["monitor:window=4"], **kw)[1]["monitor_fit"]["split"] == "test"
    table = "\n".join(defences_section(rows))
    assert all(f"| {d}" in table for d in ["none"] + ["jpeg:quality=75", "exit-cap:k=2 (exit 2)", "exit-stats"])
    amp = rows[1]["attacks"]["sample"]["adaptive"]["rad"]["50"]["latency_amplification"]
    assert amp > 0 and f"({amp:.2f}x)" in table
    assert main(["report", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert (tmp_path / "out" / "defences.md").is_file() and (tmp_path / "out" / "defences.png").is_file()
    written = json.loads(json.dumps(rows[1]))
    assert written["format"] == "deepsloth-defence/1"


def _record(model, spec, kind, clean_ee, adaptive, non_adaptive=0.98, detection=None):
    sample = {"non_adaptive": {"rad": {"5": {"efficacy_reduction": non_adaptive}}},
              "adaptive": {"rad": {"5": {"efficacy_reduction": adaptive}}, "detection": detection}}
    return {"format": "deepsloth-defence/1", "model": {"name": model}, "data": {"n": 10},
            "defence": {"spec": spec, "kind": kind},
            "clean": {"final_accuracy": 0.9, "rad": {"5": {"accuracy": clean_ee, "efficacy": 0.5}}},
            "attacks": {"sample": sample if spec != "none" else {"non_adaptive": sample["non_adaptive"]}}}


def test_the_reading_sorts_defences_by_what_the_adaptive_attack_keeps_on_every_model():
    """A defence holds only if the adaptive attack stays below half the undefended reduction on every model;
    the clean cost is the early-exit accuracy lost at the same RAD (a cap's final accuracy does not move)."""
    from deepsloth.experiments.studies import defences_reading
    recs = [_record("a", "none", "none", 0.85, None, 0.98), _record("b", "none", "none", 0.80, None, 0.90),
            _record("a", "exit-cap:k=3", "cap", 0.70, 0.20, 0.20),
            _record("b", "exit-cap:k=3", "cap", 0.79, 0.10, 0.10),
            _record("a", "jpeg:quality=75", "transform", 0.85, 0.30, 0.30),
            _record("b", "jpeg:quality=75", "transform", 0.80, 0.60, 0.40),
            _record("a", "exit-stats", "detector", 0.85, 0.50, detection={"0.05": 0.4})]
    text = defences_reading(recs)[0]
    held, broken = text.split("These do not:")
    assert "undefended, it cuts efficacy by 90-98%" in held
    assert "exit-cap:k=3 (10-20%)" in held and "jpeg:quality=75 (30-60%, non-adaptive 30-40%)" in broken
    assert "exit-stats (50%, its attacked inputs still detected 40% at 5% false positives)" in broken
    recs[-1]["attacks"]["sample"]["non_adaptive"]["detection"] = {"0.05": 1.0}
    assert "detected 40% at 5% false positives, the non-adaptive ones 100%)" in defences_reading(recs)[0]
    assert "exit-cap:k=3 15.0 points" in text and "jpeg" not in text.split("accuracy lost")[1]
    assert defences_reading(recs[:1]) == []


# ----------------------------------------------------------------------------- the attack command's deployment
@pytest.fixture(scope="module")
def sdn(tmp_path_factory):
    base = tmp_path_factory.mktemp("deployment")
    root, model_dir, _ = synthetic_sdn(base, 24, 12, store_cost=True)
    return {"root": root, "model": model_dir, "base": base}


def _attack(sdn, defence, capsys, *extra):
    out = sdn["base"] / "out"
    rc = main(["attack", "--model", str(sdn["model"]), "--data-root", str(sdn["root"]), "--device", "cpu",
               "--out", str(out), "--n", "12", "--steps", "2", "--attack", "adaptive-deepsloth", "--defence",
               str(defence), *extra])
    text = capsys.readouterr()
    assert rc == 0, text.err
    text = text.out
    return json.loads(text) if "--json" in extra else text


def _context(sdn):
    from deepsloth.experiments.context import load_context
    return load_context(str(sdn["model"]), n=12, device="cpu", data_root=str(sdn["root"]))


def _crafted_outputs(ctx, rec):
    from deepsloth.experiments.results import load_result
    return load_result(ctx, rec["crafting"]["file"]).inputs


def test_the_attack_command_evaluates_an_adaptive_attack_on_the_transformed_deployment(sdn, capsys):
    from deepsloth.experiments.deployment import deployment
    rec = _attack(sdn, "bitdepth:bits=1", capsys, "--json")
    assert rec["deployment"] == {"defence": "bitdepth:bits=1", "kind": "transform",
                                 "thresholds": "calibrated again on its clean outputs"}
    ctx = _context(sdn)
    dctx = deployment(ctx, "bitdepth:bits=1")
    x = _crafted_outputs(ctx, rec)
    defended = dctx.outputs(x)
    differs = False
    for k, r in rec["rad"].items():
        q = dctx.thresholds[k]["threshold"]
        assert r["threshold"] == q
        counts = torch.bincount(dctx.policy.exit_index(defended, q), minlength=ctx.num_exits).tolist()
        assert r["attacked"]["exit_counts"] == counts   # the deployment's exits, not the bare model's
        clean = torch.bincount(dctx.policy.exit_index(dctx.clean_outputs, q), minlength=ctx.num_exits).tolist()
        assert r["clean"]["exit_counts"] == clean
        q0 = ctx.thresholds[k]["threshold"]
        differs |= clean != torch.bincount(ctx.policy.exit_index(ctx.clean_outputs, q0),
                                           minlength=ctx.num_exits).tolist()
    assert differs   # the fixture tells the two evaluations apart (1 bit moves this model's exits)
    text = _attack(sdn, "bitdepth:bits=1", capsys)
    assert "evaluated on the deployment defended by bitdepth:bits=1 (thresholds: calibrated again" in text


def test_the_attack_command_evaluates_a_capped_deployment_with_the_bare_thresholds(sdn, capsys):
    rec = _attack(sdn, "exit-cap:k=2", capsys, "--json")
    assert rec["deployment"]["defence"] == "exit-cap:k=2" and rec["deployment"]["thresholds"] == "the bare model's"
    ctx = _context(sdn)
    for k, r in rec["rad"].items():
        assert r["threshold"] == ctx.thresholds[k]["threshold"]
        for side in ("clean", "attacked"):
            assert sum(r[side]["exit_counts"][3:]) == 0 and sum(r[side]["exit_counts"]) == 12


def test_the_attack_command_makes_a_cost_cap_concrete_for_the_model(sdn, capsys):
    from deepsloth.experiments.deployment import resolve_cap
    ctx = _context(sdn)
    concrete, why = resolve_cap(parse_defence("exit-cap:cost=0.5"), ctx)
    assert why["exit_cost"] <= 0.5 < ctx.costs.normalised[concrete.cap + 1]
    rec = _attack(sdn, "exit-cap:cost=0.5", capsys, "--json")
    assert rec["attack"]["params"]["defence"] == rec["deployment"]["defence"] == concrete.spec
    for r in rec["rad"].values():
        assert sum(r["attacked"]["exit_counts"][concrete.cap + 1:]) == 0


def test_a_saved_detector_folder_is_a_defence_and_the_record_has_its_detection(sdn, capsys, tmp_path):
    from deepsloth.defences import fingerprint
    from deepsloth.defences.detectors import ExitStatsDetector, StreamMonitor
    from deepsloth.experiments.deployment import exit_logits
    ctx = _context(sdn)
    noisy = (ctx.clean.float() / 255 + 0.3 * torch.randn(ctx.clean.shape, generator=torch.Generator().manual_seed(0)))
    det = ExitStatsDetector().fit(exit_logits(ctx, ctx.clean), exit_logits(ctx, noisy.clamp(0, 1)))
    for fpr in (0.05, 0.25):   # the attack's evasion term reads the 5% threshold
        det.calibrate(det.score(exit_logits(ctx, ctx.clean)), fpr)
    folder = det.save(tmp_path / "det")
    d = parse_defence(str(folder))
    assert d.kind == "detector" and d.spec == f"exit-stats@{fingerprint(det)}" and d.detector is not det
    rec = _attack(sdn, folder, capsys, "--json")
    dep = rec["deployment"]
    assert dep["defence"] == d.spec and set(dep["detection"]) == set(dep["false_positive_rate"]) == {"0.05", "0.25"}
    x = _crafted_outputs(ctx, rec)
    assert dep["detection"]["0.25"] == det.detection_rate(det.score(exit_logits(ctx, x)), 0.25)
    assert dep["false_positive_rate"]["0.25"] == det.false_positive_rate(det.score(exit_logits(ctx, ctx.clean)), 0.25)
    assert all(r["threshold"] == ctx.thresholds[k]["threshold"] for k, r in rec["rad"].items())
    mon = StreamMonitor(window=4)
    mon.fit(torch.randint(0, ctx.num_exits, (64,), generator=torch.Generator().manual_seed(1)), ctx.num_exits)
    with pytest.raises(DeepslothError, match="per-input detector"):
        parse_defence(str(mon.save(tmp_path / "mon")))


def test_an_adaptive_comparison_without_its_deployment_is_made_again(sdn, capsys):
    """A record an earlier version evaluated on the bare model (no `deployment` block) is not read back."""
    first = _attack(sdn, "exit-cap:k=1", capsys, "--json")
    path = Path(first["file"])
    old = json.loads(path.read_text())
    del old["deployment"]
    path.write_text(json.dumps(old))
    again = _attack(sdn, "exit-cap:k=1", capsys, "--json")
    assert again["deployment"]["defence"] == "exit-cap:k=1" and "deployment" in json.loads(path.read_text())
