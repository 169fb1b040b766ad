"""One vocabulary for every attack: `create_attack`, `list_attacks` and `AttackSpec`.

    spec = resolve_spec("deepsloth", norm="l2", scope="universal", dataset="cifar10")
    spec.cell            # "deepsloth-l2-universal"
    spec.id              # stable 12-hex-digit hash of the cell and every resolved hyper-parameter
    atk = create_attack(spec, model, seed=0)      # or create_attack("pgd-avg", model, eps=4/255)
    list_attacks()       # ["deepsloth", "pgd", "pgd-avg", "pgd-max", "uap", "adaptive-deepsloth"]

A spec is the attack name, norm, scope and *every* hyper-parameter with the defaults of
docs/method.md §5 resolved, so two specs that would craft the same thing are equal and hash to
the same id, and a spec rebuilds its attack exactly (`create_attack(spec, model)`). The seed is
not part of a spec: it is given per run. Names accepted wherever an attack is named (CLI,
audit, grid, training): a base name (`deepsloth`, `pgd`, `pgd-avg`, `pgd-max`, `uap`) with
`norm=` / `scope=` (and `adaptive-deepsloth`, DeepSloth against a named defence: docs/defences.md),
or a cell name `<attack>-<norm>-<scope>` such as `deepsloth-linf-class`,
or a short form that leaves out the defaults (`deepsloth-universal`, `deepsloth-l2`).

Each attack declares its options once (`PARAMS`, `deepsloth.attacks.params`): what the registry
accepts per scope and what a spec records both come from there.

Every attack also takes `amp="bf16"`: its forward and backward passes run under bf16 autocast
(`deepsloth.precision`; about 2x faster crafting on AMX CPUs for VGG16-BN and ResNet-56, many
times slower on CPUs without native bf16), the perturbation, projections and outputs stay fp32.
It is part of the spec (a different id), and recorded only when set, so fp32 specs keep their
ids. `amp="auto"` resolves to bf16 or fp32 for the device when the spec is made.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from torch import nn

from ..device import resolve_device
from ..errors import DeepslothError
from ..io import json_sha256
from ..precision import resolve_amp
from .adaptive import AdaptiveDeepSloth
from .deepsloth import DeepSloth
from .norms import NORMS, check_norm
from .params import SCOPE_LABELS, SCOPES
from .pgd import PGD
from .uap import UAP

ATTACKS: Tuple[str, ...] = ("deepsloth", "pgd", "pgd-avg", "pgd-max", "uap", "adaptive-deepsloth")
CLASSES = {"deepsloth": DeepSloth, "pgd": PGD, "pgd-avg": PGD, "pgd-max": PGD, "uap": UAP,
           "adaptive-deepsloth": AdaptiveDeepSloth}
PGD_OBJECTIVE = {"pgd": "final", "pgd-avg": "avg", "pgd-max": "max"}
# Which scopes and norms each attack supports.
SUPPORTED: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "deepsloth": {"scopes": SCOPES, "norms": NORMS},
    "pgd": {"scopes": ("sample",), "norms": NORMS},
    "pgd-avg": {"scopes": ("sample",), "norms": NORMS},
    "pgd-max": {"scopes": ("sample",), "norms": NORMS},
    "uap": {"scopes": ("universal",), "norms": ("linf",)},
    "adaptive-deepsloth": {"scopes": SCOPES, "norms": NORMS},
}
LABELS = {"deepsloth": "DeepSloth", "pgd": "PGD", "pgd-avg": "PGD-avg", "pgd-max": "PGD-max", "uap": "UAP",
          "adaptive-deepsloth": "adaptive DeepSloth"}
NORM_LABELS = {"linf": "l_inf", "l2": "l_2", "l1": "l_1"}


def list_attacks() -> List[str]:
    """The registered attack names."""
    return list(ATTACKS)


def parse_name(name: str, norm: Optional[str] = None, scope: Optional[str] = None) -> Tuple[str, str, str]:
    """(attack, norm, scope) for a base, cell or short name; explicit `norm`/`scope` must agree."""
    text = str(name).strip().lower()
    base = next((a for a in sorted(ATTACKS, key=len, reverse=True) if text == a or text.startswith(a + "-")), None)
    if base is None:
        raise DeepslothError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)} "
                             f"(optionally as <attack>-<norm>-<scope>, e.g. deepsloth-l2-universal)")
    found: Dict[str, str] = {}
    for part in [p for p in text[len(base):].split("-") if p]:
        kind = "norm" if part in NORMS or part in ("l_inf", "inf") else "scope" if part in SCOPES else None
        if kind is None or kind in found:
            raise DeepslothError(f"cannot read attack name {name!r}: {part!r} is not a norm "
                                 f"({', '.join(NORMS)}) or scope ({', '.join(SCOPES)})")
        found[kind] = check_norm(part) if kind == "norm" else part
    for kind, given in (("norm", norm), ("scope", scope)):
        if given is not None:
            given = check_norm(given) if kind == "norm" else str(given)
            if kind in found and found[kind] != given:
                raise DeepslothError(f"attack {name!r} names {kind} {found[kind]} but {kind} {given} was given")
            found[kind] = given
    sup = SUPPORTED[base]
    n = found.get("norm", "linf")
    s = found.get("scope", sup["scopes"][0])
    if s not in SCOPES:
        raise DeepslothError(f"unknown scope {s!r}; choose from {', '.join(SCOPES)}")
    if s not in sup["scopes"]:
        raise DeepslothError(f"{base} supports scope {' / '.join(sup['scopes'])}, not {s}")
    if n not in sup["norms"]:
        raise DeepslothError(f"{base} supports norm {' / '.join(sup['norms'])}, not {n}")
    return base, n, s


@dataclass(frozen=True)
class AttackSpec:
    """An attack with every hyper-parameter resolved (no seed); see the module docstring."""

    attack: str
    norm: str
    scope: str
    params: Dict[str, Any] = field(default_factory=dict, compare=True, hash=False)

    @property
    def cell(self) -> str:
        return f"{self.attack}-{self.norm}-{self.scope}"

    @property
    def label(self) -> str:
        amp = f", {self.params['amp']}" if self.params.get("amp") else ""   # crafted under autocast
        return (f"{LABELS.get(self.attack, self.attack)} ({SCOPE_LABELS.get(self.scope, self.scope)}, "
                f"{NORM_LABELS.get(self.norm, self.norm)}{amp})")

    def to_dict(self) -> Dict[str, Any]:
        return {"attack": self.attack, "norm": self.norm, "scope": self.scope, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "AttackSpec":
        try:
            return cls(str(d["attack"]), str(d["norm"]), str(d["scope"]), dict(d.get("params") or {}))
        except (KeyError, TypeError) as exc:
            raise DeepslothError(f"not an attack spec: {d!r}") from exc

    @property
    def id(self) -> str:
        """12 hex digits of the SHA-256 of the canonical JSON of the spec."""
        return json_sha256(self.to_dict())[:12]

    def __hash__(self) -> int:
        return hash(self.id)


def allowed_options(attack: str, scope: str) -> Tuple[str, ...]:
    """The options `attack` takes in `scope`, from its declaration."""
    return CLASSES[attack].PARAMS.names(scope)


def _build(attack: str, norm: str, scope: str, model: nn.Module, params: Dict[str, Any], seed: int,
           device=None):
    if attack in PGD_OBJECTIVE:
        return PGD(model, objective=PGD_OBJECTIVE[attack], norm=norm, seed=seed, device=device, **params)
    if attack == "uap":
        return UAP(model, norm=norm, seed=seed, device=device, **params)
    if attack == "adaptive-deepsloth":
        return AdaptiveDeepSloth(model, norm=norm, scope=scope, seed=seed, device=device, **params)
    return DeepSloth(model, norm=norm, scope=scope, seed=seed, device=device, **params)


def resolve_spec(name: Union[str, AttackSpec], *, norm: Optional[str] = None, scope: Optional[str] = None,
                 dataset: Optional[str] = None, device=None, **overrides: Any) -> AttackSpec:
    """The spec for an attack name plus overrides (None values mean "default").

    `dataset` ("cifar10" / "tinyimagenet") picks the DeepSloth defaults of that dataset. `amp="auto"`
    becomes "bf16" or fp32 for `device` (default: the "auto" device), so the spec records what runs."""
    if isinstance(name, AttackSpec):
        if norm or scope or any(v is not None for v in overrides.values()):
            raise DeepslothError("a resolved AttackSpec takes no further options")
        return name
    attack, norm, scope = parse_name(name, norm, scope)
    params = {k: v for k, v in overrides.items() if v is not None}
    if params.get("amp") is not None:
        params["amp"] = resolve_amp(params["amp"], resolve_device(device))
    if attack in ("deepsloth", "adaptive-deepsloth") and dataset is not None:
        params.setdefault("dataset", dataset)
    if attack == "uap":
        params.pop("dataset", None)
    if not isinstance(params.get("objective", ""), str):
        raise DeepslothError("a spec names its objective (see deepsloth.attacks.objectives.OBJECTIVES); "
                             "pass a function to the attack class instead")
    try:
        atk = _build(attack, norm, scope, nn.Identity(), params, seed=0, device="cpu")
    except (ValueError, DeepslothError) as exc:
        raise DeepslothError(str(exc)) from None
    return AttackSpec(attack, norm, scope, atk.spec_params())


def create_attack(name: Union[str, AttackSpec], model: nn.Module, *, seed: int = 0, device=None,
                  norm: Optional[str] = None, scope: Optional[str] = None, dataset: Optional[str] = None,
                  **cfg: Any):
    """An attack object for `name` (or a resolved spec) on `model` (timm-style constructor)."""
    spec = resolve_spec(name, norm=norm, scope=scope, dataset=dataset, device=device, **cfg)
    return _build(spec.attack, spec.norm, spec.scope, model, dict(spec.params), seed=seed, device=device)


__all__ = ["ATTACKS", "SCOPES", "SUPPORTED", "AttackSpec", "list_attacks", "parse_name", "resolve_spec",
           "create_attack", "allowed_options"]
