"""bf16 autocast training (`--amp bf16`, deepsloth.precision): the forwards run in bf16 while the
weights, the loss and the adversarial inputs stay fp32; model.json records it; the same seed gives
the same weights; a checkpoint resumes only with the precision it was made with (tiny synthetic
data, one epoch of a few steps)."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import synthetic_cifar10

from deepsloth.cli.main import main
from deepsloth.errors import DeepslothError, DeepslothWarning
from deepsloth.experiments.training import TrainConfig, run_training
from deepsloth.models import create_model
from deepsloth.precision import autocast, check_amp
from deepsloth.train.adversarial import AdversarialTraining

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_cifar10(tmp_path_factory.mktemp("amp"), 32, 8)


def cfg(data, out, **kw):
    base = dict(arch="resnet56", out=str(out), mode="sdn", recipe="fast", epochs=1, batch_size=16, device="cpu",
                data_root=str(data), amp="bf16")
    base.update(kw)
    return TrainConfig(**base)


def test_autocast_runs_convolutions_in_bf16_and_off_is_fp32():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with autocast(torch.device("cpu"), "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "off"):
        assert conv(x).dtype == torch.float32
    assert check_amp(None) is None and check_amp("off") is None and check_amp("bf16") == "bf16"
    with pytest.raises(DeepslothError, match="unknown --amp 'fp8'"):
        check_amp("fp8")


def test_bf16_training_is_recorded_reproducible_and_keeps_fp32_weights(data, tmp_path):
    meta = run_training(cfg(data, tmp_path / "a"), log=lambda s: None)
    assert meta["amp"] == "bf16"
    assert json.loads((tmp_path / "a" / "model.json").read_text())["amp"] == "bf16"
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in meta["history"])
    a = create_model(tmp_path / "a")
    _ = a.meta
    assert all(p.dtype == torch.float32 for p in a.parameters())
    fresh = create_model("resnet56", "cifar10", sdn=True, seed=0)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), fresh.parameters()))   # it trained
    run_training(cfg(data, tmp_path / "b"), log=lambda s: None)
    b = create_model(tmp_path / "b")
    _ = b.meta
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    fp32 = run_training(cfg(data, tmp_path / "c", amp=None), log=lambda s: None)
    assert "amp" not in fp32
    c = create_model(tmp_path / "c")
    _ = c.meta
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))   # bf16 really ran


def test_a_checkpoint_resumes_only_with_its_precision(data, tmp_path):
    from deepsloth.train import checkpoint

    out = tmp_path / "r"
    run_training(cfg(data, out, amp=None, epochs=2), log=lambda s: None)
    # fake a run killed after epoch 1: write epoch 1's checkpoint from the finished model
    model = create_model(out)
    meta = model.meta
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint.save_checkpoint(out, model, opt, {"epoch": 1, "mode": "sdn", "recipe": meta["recipe"], "history": [],
                                                 "elapsed_s": 0.0, "seed": 0, "adversarial": None, "amp": None})
    with pytest.raises(DeepslothError, match="--amp off; resume it with the same --amp"):
        run_training(cfg(data, out, epochs=2, resume=True), log=lambda s: None)


def test_adversarial_inputs_under_bf16_stay_fp32_and_inside_the_ball():
    model = create_model("resnet56", "cifar10", sdn=True, seed=0)
    x = torch.rand(4, 3, 32, 32)
    y = torch.arange(4)
    for attack in ("pgd", "deepsloth"):
        adv = AdversarialTraining(attack, mode="ic-only", steps=2, eps=4 / 255)
        with autocast(torch.device("cpu"), "bf16"):
            x_adv, _ = adv.inputs(model, x, y, seed=0)
            loss = adv.loss(model(x_adv), y)
        assert x_adv.dtype == torch.float32 and loss.dtype == torch.float32
        assert 0 < float((x_adv - x).abs().max()) <= 4 / 255 + 1e-6


def test_bad_amp_is_a_one_line_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "--arch", "resnet56", "--out", str(tmp_path / "x"), "--amp", "fp8"])
    assert e.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err


def test_attack_specs_take_amp_without_changing_fp32_ids():
    from deepsloth.attacks.registry import AttackSpec, create_attack, resolve_spec

    fp32 = resolve_spec("deepsloth-linf-sample", dataset="cifar10")
    assert resolve_spec("deepsloth-linf-sample", dataset="cifar10", amp="off") == fp32
    assert "amp" not in fp32.params and fp32.label == "DeepSloth (per-sample, l_inf)"
    bf = resolve_spec("deepsloth-linf-sample", dataset="cifar10", amp="bf16")
    assert bf.id != fp32.id and bf.params["amp"] == "bf16" and bf.cell == fp32.cell
    assert bf.label == "DeepSloth (per-sample, l_inf, bf16)"
    assert AttackSpec.from_dict(bf.to_dict()) == bf
    with pytest.raises(DeepslothError, match="unknown --amp"):
        resolve_spec("pgd", amp="fp16")

    model = create_model("resnet56", "cifar10", sdn=True, seed=0).eval()
    seen = []
    model.stem.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = torch.rand(3, 3, 32, 32)
    for name in ("pgd-linf-sample", "deepsloth-l2-sample", "deepsloth-l1-sample"):
        atk = create_attack(name, model, amp="bf16", steps=2, dataset="cifar10")
        assert atk.amp == "bf16" and all(o.dtype == torch.float32 for o in atk.logits(x))
        seen.clear()
        x_adv = atk(x, torch.arange(3))
        assert seen and set(seen) == {torch.bfloat16}   # the model really ran in bf16
        assert x_adv.dtype == torch.float32 and float((x_adv - x).abs().max()) > 0
        norm = name.split("-")[-2]
        d = (x_adv - x).flatten(1)
        size = {"linf": d.abs().max(1).values, "l2": d.norm(dim=1), "l1": d.abs().sum(1)}[norm]
        eps = resolve_spec(name, dataset="cifar10").params["eps"]   # l_2: the starting budget (it only decays)
        assert float(size.max()) <= eps * (1 + 1e-4) + 1e-6, name


@pytest.mark.parametrize("native", [False, True])
def test_auto_amp_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, native):
    """`--amp auto`: bf16 on a CPU with AMX / AVX512-BF16, fp32 elsewhere (emulated bf16 is many times
    slower); an explicit bf16 on a CPU without it is kept but warned about; the spec records what runs."""
    import warnings

    import deepsloth.precision as precision
    from deepsloth.attacks.registry import resolve_spec
    from deepsloth.experiments.zoo import stage_amp

    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert precision.native_bf16(cpu) is native
    assert precision.resolve_amp("auto", cpu) == ("bf16" if native else None)
    assert precision.resolve_amp("off", cpu) is None and precision.resolve_amp(None, "cpu") is None
    with autocast(cpu, "auto"):
        assert torch.nn.Conv2d(3, 4, 3)(torch.rand(1, 3, 8, 8)).dtype == (torch.bfloat16 if native else torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precision.resolve_amp("bf16", cpu) == "bf16"
    slow = [w for w in caught if issubclass(w.category, DeepslothWarning) and "emulated" in str(w.message)]
    assert len(slow) == (0 if native else 1)

    auto = resolve_spec("deepsloth-linf-sample", dataset="cifar10", amp="auto", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = resolve_spec("deepsloth-linf-sample", dataset="cifar10", amp="bf16" if native else None)
    assert auto == want and auto.params.get("amp") == ("bf16" if native else None)

    # the zoo: a recipe's bf16 stage asks for auto; an explicit --amp wins; fp32 stages stay fp32
    assert stage_amp({"amp": "bf16"}, {}) == "auto" and stage_amp({}, {"amp": "bf16"}) == "auto"
    assert stage_amp({"amp": "bf16"}, {}, amp="off") == "off" and stage_amp({}, {}) is None


def test_auto_amp_training_records_the_precision_that_ran(data, tmp_path, monkeypatch):
    import deepsloth.precision as precision

    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: False)
    meta = run_training(cfg(data, tmp_path / "auto", amp="auto"), log=lambda s: None)
    assert "amp" not in meta   # fp32 here: model.json says so, and a resume needs --amp off (or auto again)


def test_the_cli_offers_the_library_precisions():
    from deepsloth.cli.common import AMP_CHOICES as CLI_CHOICES
    from deepsloth.precision import AMP_CHOICES

    assert CLI_CHOICES == AMP_CHOICES == ("off", "bf16", "auto")


def test_the_cli_prints_a_slow_bf16_as_one_warning_line(capsys, monkeypatch, tmp_path):
    """`--amp bf16` on a CPU without native bf16: one `deepsloth: warning:` line, and the command goes on
    (here to its next check, an output folder under a file, which is the usual one-line error)."""
    import deepsloth.precision as precision

    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: False)
    (tmp_path / "file").write_text("")
    rc = main(["attack", "--model", "resnet56_sdn_cifar10", "--device", "cpu", "--amp", "bf16", "--n", "2",
               "--out", str(tmp_path / "file" / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[0] == ("deepsloth: warning: bf16 autocast on a CPU without native bf16 (no AMX or "
                                  "AVX512-BF16) is emulated and many times slower than fp32; use --amp auto or "
                                  "off here")
    assert len(err) == 2 and err[1].startswith("deepsloth: error:")
