"""Each attack declares its hyper-parameters once (`PARAMS`); the constructor checks, `config()`, the
registry's accepted options, what a spec records and the command-line flags all come from it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deepsloth.attacks.params import Param, Params
from deepsloth.attacks.registry import CLASSES, SUPPORTED, allowed_options, create_attack, resolve_spec
from deepsloth.cli.attack import FLAG_TYPES, spec_options
from deepsloth.cli.main import build_parser
from deepsloth.errors import DeepslothError

CELLS = [(a, n, s) for a, sup in SUPPORTED.items() for n in sup["norms"] for s in sup["scopes"]]
# a valid command-line token per flag, and the option value it must give
TOKENS = {"--eps": ("0.02", 0.02), "--steps": ("3", 3), "--step-size": ("0.01", 0.01),
          "--random-start": ("no", False), "--craft-n": ("7", 7), "--epochs": ("2", 2),
          "--preset": ("strong", "strong"), "--defence": ("median:kernel=5", "median:kernel=5"),
          "--eot": ("1", 1), "--detector-weight": ("3", 3.0)}
# what an attack cannot be built without (the adaptive attack names the defence it adapts to)
REQUIRED = {"adaptive-deepsloth": {"defence": "jpeg:quality=75"}}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.h1, self.h2 = nn.Linear(4, 10), nn.Linear(4, 10)

    def forward(self, x):
        z = torch.relu(self.a(x)).mean(dim=(2, 3))
        return [self.h1(z), self.h2(z)]


@pytest.mark.parametrize("attack,norm,scope", CELLS)
def test_declaration_config_registry_and_cli_agree(attack, norm, scope):
    cls = CLASSES[attack]
    declared = {p.name: p for p in cls.PARAMS if scope in p.scopes}
    assert set(allowed_options(attack, scope)) == set(declared)
    required = REQUIRED.get(attack, {})
    spec = resolve_spec(attack, norm=norm, scope=scope, **required)
    atk = create_attack(spec, Tiny())
    # built from the declared defaults: every option with a declared default has it
    for name, p in declared.items():
        if p.default is not None and name not in required:
            assert atk.options[name] == p.default, name
    # the spec records exactly the declared options its rules select, and config() carries them
    assert set(spec.params) <= set(declared)
    recorded = {n for n, p in declared.items() if (p.record == "always" or n in required) and norm in p.record_norms}
    assert set(spec.params) == recorded
    cfg = atk.config()
    assert all(cfg[k] == v for k, v in spec.params.items())
    assert atk.spec_params() == spec.params and resolve_spec(spec.cell, **spec.params) == spec
    with pytest.raises(DeepslothError, match="takes no option bogus"):
        resolve_spec(attack, norm=norm, scope=scope, bogus=1, **required)
    # the command line: every flag the attack declares sets that option, every other flag is refused
    parser = build_parser()
    flags = cls.PARAMS.flags()
    for flag in FLAG_TYPES:
        token, value = TOKENS[flag]
        args = parser.parse_args(["attack", "--model", "m", "--attack", spec.cell, flag, token])
        if flag in flags and flags[flag][0] in declared:
            option = flags[flag][0]
            assert spec_options(args) == {option: value}
            assert resolve_spec(spec.cell, **{**required, **spec_options(args)}).params[option] == value
        elif flag in flags:   # declared for another scope of the attack: the registry refuses it
            with pytest.raises(DeepslothError, match=f"takes no option {flags[flag][0]}"):
                resolve_spec(spec.cell, **required, **spec_options(args))
        else:
            with pytest.raises(DeepslothError, match=f"takes no {flag}"):
                spec_options(args)


def test_every_flag_is_declared_by_some_attack_and_amp_by_all():
    declared = set()
    for cls in CLASSES.values():
        declared |= set(cls.PARAMS.flags())
        assert "amp" in cls.PARAMS.names("sample") + cls.PARAMS.names("universal")
    assert declared == set(FLAG_TYPES)


def test_amp_is_an_option_of_the_attack_classes_and_recorded_only_when_set():
    assert CLASSES["pgd"](Tiny(), amp="bf16").amp == "bf16"
    assert "amp" not in resolve_spec("pgd").params
    assert resolve_spec("pgd", amp="bf16").params["amp"] == "bf16"
    with pytest.raises(ValueError, match="amp"):
        CLASSES["pgd"](Tiny(), amp="fp8")


def test_options_that_change_the_attack_are_part_of_its_spec():
    """num_classes and a named objective change what is crafted, so they change the id (their
    defaults are not recorded: the ids of specs made before they were recorded stay valid)."""
    base = resolve_spec("deepsloth-linf-class")
    assert resolve_spec("deepsloth-linf-class", num_classes=12).id != base.id
    assert resolve_spec("deepsloth", objective="final").id != resolve_spec("deepsloth").id
    with pytest.raises(DeepslothError, match="names its objective"):
        resolve_spec("deepsloth", objective=lambda logits, labels: logits[0].sum(1))


def test_params_resolution_rules():
    ps = Params("toy", Param("a", "an option", default=1, check=int),
                Param("b", "universal only", scopes=("universal",)),
                Param("c", "recorded when changed", default=0, record="changed"),
                Param("d", "l_1 only", default=5, record_norms=("l1",)))
    v = ps.resolve({"a": "3"}, scope="sample")
    assert v == {"a": 3, "c": 0, "d": 5, "amp": None}
    assert ps.spec(v, norm="linf", scope="sample") == {"a": 3}
    assert ps.spec(dict(v, c=2), norm="l1", scope="sample") == {"a": 3, "c": 2, "d": 5}
    with pytest.raises(ValueError, match=r"toy \(per-sample\) takes no option b; it takes a, amp, c, d"):
        ps.resolve({"b": 1}, scope="sample")


# -- what an attack refuses before its first step (a ValueError naming the argument) ----------------------------

@pytest.fixture(scope="module")
def cifar_sdn():
    from deepsloth.models import create_model
    return create_model("resnet56", "cifar10", seed=0).eval()   # its metadata: 32x32 inputs, 10 classes


@pytest.mark.parametrize("make_x, make_y, message", [
    (lambda: torch.rand(2, 3, 64, 64), lambda: torch.tensor([1, 2]), "64x64 images, the model takes 32x32"),
    (lambda: torch.rand(2, 3, 32, 32) * 255, lambda: None, r"pixels in \[0, 1\].*divide by 255"),
    (lambda: torch.full((2, 3, 32, 32), float("nan")), lambda: None, "NaN"),
    (lambda: torch.rand(2, 1, 32, 32), lambda: None, "1 channels, the model takes 3"),
    (lambda: torch.rand(0, 3, 32, 32), lambda: None, "empty batch"),
    (lambda: torch.rand(3, 32, 32), lambda: None, r"\[N, C, H, W\]"),
    (lambda: torch.rand(2, 3, 32, 32), lambda: torch.tensor([1, 10]), r"outside 0..9"),
    (lambda: torch.rand(2, 3, 32, 32), lambda: torch.tensor([1, -1]), r"outside 0..9"),
    (lambda: torch.rand(2, 3, 32, 32), lambda: torch.tensor([1.0, 2.0]), "integer class indices"),
    (lambda: torch.rand(2, 3, 32, 32), lambda: torch.tensor([1]), "one label per input"),
    (lambda: torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.int32), lambda: None, "uint8 or float"),
])
@pytest.mark.parametrize("attack", ["pgd", "deepsloth"])
def test_attacks_refuse_what_they_cannot_attack(cifar_sdn, attack, make_x, make_y, message):
    atk = create_attack(attack, cifar_sdn, steps=1)
    with pytest.raises(ValueError, match=message):
        atk(make_x(), make_y())


def test_normalisation_must_be_finite_and_positive(cifar_sdn):
    atk = create_attack("pgd", cifar_sdn, steps=1)
    with pytest.raises(ValueError, match="finite"):
        atk.set_normalization_used((0.5, 0.5, 0.5), (float("nan"),) * 3)
    with pytest.raises(ValueError, match="> 0"):
        atk.set_normalization_used((0.5, 0.5, 0.5), (0.0, 1.0, 1.0))
    # uint8 inputs and [0, 1] floats are what it attacks
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = atk(x)
    assert out.shape == (2, 3, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1
