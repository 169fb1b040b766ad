"""One vocabulary for every attack: `create_attack`, `list_attacks` and `AttackSpec`.

    spec = resolve_spec("deepsloth", norm="l2", scope="universal", dataset="cifar10")
    spec.cell            # "deepsloth-l2-universal"
    spec.id              # stable 12-hex-digit hash of the cell and every resolved hyper-parameter
    atk = create_attack(spec, model, seed=0)      # or create_attack("pgd-avg", model, eps=4/255)
    list_attacks()       # ["deepsloth", "pgd", "pgd-avg", "pgd-max", "uap"]

A spec is the attack name, norm, scope and *every* hyper-parameter with the defaults of
docs/method.md §5 resolved, so two specs that would craft the same thing are equal and hash to
the same id, and a spec rebuilds its attack exactly (`create_attack(spec, model)`). The seed is
not part of a spec: it is given per run. Names accepted wherever an attack is named (CLI,
audit, grid, training): a base name (`deepsloth`, `pgd`, `pgd-avg`, `pgd-max`, `uap`) with
`norm=` / `scope=`, or a cell name `<attack>-<norm>-<scope>` such as `deepsloth-linf-class`,
or a short form that leaves out the defaults (`deepsloth-universal`, `deepsloth-l2`).

Every attack also takes `amp="bf16"`: its forward and backward passes run under bf16 autocast
(`deepsloth.precision`; about 2x faster crafting on AMX CPUs for VGG16-BN and ResNet-56, many
times slower on CPUs without native bf16), the perturbation, projections and outputs stay fp32.
It is part of the spec (a different id), and recorded only when set, so fp32 specs keep their
ids. `amp="auto"` resolves to bf16 or fp32 for the device when the spec is made.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from torch import nn

from ..errors import DeepslothError
from .norms import NORMS, check_norm

ATTACKS: Tuple[str, ...] = ("deepsloth", "pgd", "pgd-avg", "pgd-max", "uap")
SCOPES: Tuple[str, ...] = ("sample", "universal", "class")
PGD_OBJECTIVE = {"pgd": "final", "pgd-avg": "avg", "pgd-max": "max"}
# Which scopes and norms each attack supports.
SUPPORTED: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "deepsloth": {"scopes": SCOPES, "norms": NORMS},
    "pgd": {"scopes": ("sample",), "norms": NORMS},
    "pgd-avg": {"scopes": ("sample",), "norms": NORMS},
    "pgd-max": {"scopes": ("sample",), "norms": NORMS},
    "uap": {"scopes": ("universal",), "norms": ("linf",)},
}
LABELS = {"deepsloth": "DeepSloth", "pgd": "PGD", "pgd-avg": "PGD-avg", "pgd-max": "PGD-max", "uap": "UAP"}
SCOPE_LABELS = {"sample": "per-sample", "universal": "universal", "class": "class-universal"}
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
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def __hash__(self) -> int:
        return hash(self.id)


_PGD_KEYS = {"eps", "steps", "step_size", "random_start", "percentile", "targeted", "reduction", "alpha"}
_DS_SAMPLE_KEYS = {"eps", "steps", "step_size", "random_start", "gamma", "lr_min", "decay_every", "grad_clip",
                   "percentile", "dataset", "objective"}
ALLOWED: Dict[Tuple[str, str], set] = {
    **{(a, "sample"): _PGD_KEYS for a in PGD_OBJECTIVE},
    ("uap", "universal"): {"eps", "overshoot", "max_iter_df", "n_images", "max_passes", "target_fooling",
                           "candidates", "batch_size"},
    ("deepsloth", "sample"): _DS_SAMPLE_KEYS,
    ("deepsloth", "universal"): _DS_SAMPLE_KEYS | {"preset", "n_images", "batch_size", "epochs"},
    ("deepsloth", "class"): _DS_SAMPLE_KEYS | {"preset", "n_images", "batch_size", "epochs", "num_classes"},
}


def _build(attack: str, norm: str, scope: str, model: nn.Module, params: Dict[str, Any], seed: int,
           device=None):
    from ..precision import check_amp
    from .deepsloth import DeepSloth
    from .pgd import PGD
    from .uap import UAP

    params = dict(params)
    amp = check_amp(params.pop("amp", None))
    if attack in PGD_OBJECTIVE:
        atk = PGD(model, objective=PGD_OBJECTIVE[attack], norm=norm, seed=seed, device=device, **params)
    elif attack == "uap":
        atk = UAP(model, norm=norm, seed=seed, device=device, **params)
    else:
        atk = DeepSloth(model, norm=norm, scope=scope, seed=seed, device=device, **params)
    atk.amp = amp
    return atk


def _resolved_params(atk) -> Dict[str, Any]:
    """Constructor keyword arguments that rebuild `atk` exactly (every default filled in); `amp`
    only when set, so that the ids of fp32 specs stay what they were."""
    p = _constructor_params(atk)
    if getattr(atk, "amp", None):
        p["amp"] = atk.amp
    return p


def _constructor_params(atk) -> Dict[str, Any]:
    from .deepsloth import DeepSloth
    from .pgd import PGD

    if isinstance(atk, PGD):
        p = {"eps": atk.eps, "steps": atk.steps, "step_size": atk.step_size, "random_start": atk.random_start}
        if atk.norm == "l1":
            p["percentile"] = atk.percentile
        if atk.targeted:              # recorded only when not the default: existing ids stay valid
            p["targeted"] = True
        if atk.reduction != "sum":
            p["reduction"] = atk.reduction
        return p
    if isinstance(atk, DeepSloth):
        r = atk.params()
        p = {k: r[k] for k in ("eps", "steps", "step_size", "random_start") if r.get(k) is not None}
        p["dataset"] = r["dataset_family"]
        if atk.norm == "l2":
            p.update(gamma=r["gamma"], lr_min=atk.lr_min, grad_clip=atk.grad_clip, decay_every=atk.decay_every)
        if atk.norm == "l1":
            p["percentile"] = atk.percentile
        if atk.scope != "sample":
            p.update(preset=atk.preset, n_images=r["n_images"], batch_size=r["batch_size"], epochs=r["epochs"])
        return p
    cfg = atk.config()
    return {k: v for k, v in cfg.items() if k not in ("attack", "norm", "seed", "amp")}


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
        from ..device import resolve_device
        from ..precision import resolve_amp

        params["amp"] = resolve_amp(params["amp"], resolve_device(device))
    if attack == "deepsloth" and dataset is not None:
        params.setdefault("dataset", dataset)
    if attack == "uap":
        params.pop("dataset", None)
    unknown = sorted(set(params) - ALLOWED[(attack, scope)] - {"amp"})   # amp: every attack (deepsloth.precision)
    if unknown:
        raise DeepslothError(f"{attack} ({SCOPE_LABELS[scope]}) takes no option {', '.join(unknown)}; it takes "
                             f"{', '.join(sorted(ALLOWED[(attack, scope)]))}")
    try:
        atk = _build(attack, norm, scope, nn.Identity(), params, seed=0, device="cpu")
    except TypeError as exc:
        raise DeepslothError(f"{attack}: unknown option ({exc})") from None
    return AttackSpec(attack, norm, scope, _resolved_params(atk))


def create_attack(name: Union[str, AttackSpec], model: nn.Module, *, seed: int = 0, device=None,
                  norm: Optional[str] = None, scope: Optional[str] = None, dataset: Optional[str] = None,
                  **cfg: Any):
    """An attack object for `name` (or a resolved spec) on `model` (timm-style constructor)."""
    spec = resolve_spec(name, norm=norm, scope=scope, dataset=dataset, device=device, **cfg)
    return _build(spec.attack, spec.norm, spec.scope, model, dict(spec.params), seed=seed, device=device)


__all__ = ["ATTACKS", "SCOPES", "SUPPORTED", "AttackSpec", "list_attacks", "parse_name", "resolve_spec",
           "create_attack"]
