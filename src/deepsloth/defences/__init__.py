"""Defences against slowdown attacks, each evaluated against an adaptive attacker (docs/defences.md).

    from deepsloth.defences import parse_defence
    d = parse_defence("jpeg:quality=75")      # an input transform: d.transform(x) before the model
    d = parse_defence("exit-cap:k=3")         # a compute cap: no input goes past exit 3 (0-based)
    d = parse_defence("exit-stats")           # a detector on the exit statistics (fitted by `deepsloth defend`)

Every defence is named by one line, `<name>[:<param>=<value>,...]`:

* input transforms (`defences.transforms`): `jpeg:quality=Q`, `bitdepth:bits=B`, `median:kernel=K`,
  `resize-pad:shrink=S` (randomised);
* compute caps (`defences.caps`): `exit-cap:k=K` (0-based exit), `exit-cap:cost=c` (the last exit within
  that share of the network's cost), `latency-cap:budget_ms=T` (the IoT latency model of docs/method.md
  §6 turns the budget into an exit cap for a given model);
* detectors (`defences.detectors`): `exit-stats` (the exit confidences and entropies a deployment
  computes anyway), `input` (a learned binary detector on the input); once fitted and registered
  (`register`), a detector is named `<name>@<fingerprint>` so an adaptive attack can name it; the folder
  of a saved one (`deepsloth defend` writes them under `<out>/<model>/detectors/`) loads and registers it;
* `monitor:window=W`: a stream monitor on the share of inputs that reach late exits.

`parse_defence` checks the name and parameters (a one-line error naming what is accepted) and
returns a `Defence` with its canonical `spec` text; the adaptive attack
(`deepsloth.attacks.adaptive`) and the defence study (`deepsloth defend`) both start from it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import DeepslothError

CAPS = ("exit-cap", "latency-cap")
DETECTORS = ("exit-stats", "input")
MONITORS = ("monitor",)
_FITTED: Dict[str, Any] = {}


@dataclass(frozen=True)
class Defence:
    """One parsed defence (see the module docstring)."""

    spec: str                         # canonical one-line name
    kind: str                         # "transform" | "cap" | "detector" | "monitor"
    name: str
    params: Dict[str, Any] = field(default_factory=dict)
    transform: Any = None             # an InputTransform (kind "transform")
    detector: Any = None              # a fitted detector (kind "detector", named with @fingerprint)

    @property
    def randomized(self) -> bool:
        return bool(getattr(self.transform, "randomized", False))

    @property
    def cap(self) -> Optional[int]:
        """The exit (0-based) no input goes past, for `exit-cap:k=K` (a cost or latency cap names it once
        resolved for a model: `deepsloth.experiments.defend.resolve_cap`)."""
        return int(self.params["k"]) if self.name == "exit-cap" and "k" in self.params else None


def _split(text: str) -> tuple:
    if not isinstance(text, str) or not text.strip() or "\n" in text:
        raise DeepslothError(f"a defence is one line like jpeg:quality=75, got {text!r}")
    name, _, rest = text.strip().partition(":")
    params: Dict[str, str] = {}
    for item in [i for i in rest.split(",") if i.strip()]:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise DeepslothError(f"cannot read defence parameter {item!r} in {text!r}: write name=value")
        params[key.strip().replace("-", "_")] = value.strip()
    return name.strip().lower(), params


def _int(name: str, value: str, low: int, high: Optional[int] = None) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DeepslothError(f"{name} must be an integer, got {value!r}") from None
    if number < low or (high is not None and number > high):
        raise DeepslothError(f"{name} must be in {low}..{high if high is not None else 'inf'}, got {number}")
    return number


def _only(name: str, params: Dict[str, str], allowed: tuple) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise DeepslothError(f"defence {name} takes no parameter {', '.join(unknown)}; it takes "
                             f"{', '.join(allowed) or 'none'}")


def _canonical(name: str, params: Dict[str, Any]) -> str:
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={params[k]:g}" if isinstance(params[k], float) else f"{k}={params[k]}"
                                 for k in sorted(params))


def parse_defence(text: Any) -> Defence:
    """A `Defence` from its one-line name (or pass one through); see the module docstring."""
    if isinstance(text, Defence):
        return text
    if _is_saved_detector(text):
        return _load_fitted(Path(text))
    from .transforms import TRANSFORMS, parse as parse_transform

    name, params = _split(text)
    base, at, fingerprint = name.partition("@")
    if base in TRANSFORMS:
        transform = parse_transform(text.strip())
        return Defence(transform.spec(), "transform", base, dict(transform.describe()), transform=transform)
    if base == "exit-cap":
        _only(base, params, ("k", "cost"))
        if len(params) != 1:
            raise DeepslothError("exit-cap needs exactly one of k (the 0-based exit it caps at, e.g. exit-cap:k=3) "
                                 "or cost (the last exit within that share of the network, e.g. exit-cap:cost=0.5)")
        if "k" in params:
            values: Dict[str, Any] = {"k": _int("k", params["k"], 0)}
        else:
            try:
                cost = float(params["cost"])
            except ValueError:
                cost = float("nan")
            if not 0.0 < cost < 1.0:
                raise DeepslothError(f"exit-cap cost must be in (0, 1), got {params['cost']!r}")
            values = {"cost": cost}
        return Defence(_canonical(base, values), "cap", base, values)
    if base == "latency-cap":
        _only(base, params, ("budget_ms",))
        try:
            budget = float(params.get("budget_ms", "nan"))
        except ValueError:
            budget = float("nan")
        if not budget > 0 or budget == float("inf"):
            raise DeepslothError("latency-cap needs a positive budget in milliseconds, e.g. latency-cap:budget_ms=50")
        values = {"budget_ms": budget}
        return Defence(_canonical(base, values), "cap", base, values)
    if base in DETECTORS:
        _only(base, params, ())
        if not at:
            return Defence(base, "detector", base, {})
        detector = _FITTED.get(fingerprint)
        if detector is None:
            raise DeepslothError(f"no fitted detector {name!r} in this process: fit it with deepsloth defend or "
                                 f"load it and call deepsloth.defences.register(detector)")
        return Defence(name, "detector", base, {"fingerprint": fingerprint}, detector=detector)
    if base in MONITORS:
        _only(base, params, ("window",))
        values = {"window": _int("window", params.get("window", "100"), 2)}
        return Defence(_canonical(base, values), "monitor", base, values)
    known = sorted(TRANSFORMS) + list(CAPS) + list(DETECTORS) + list(MONITORS)
    raise DeepslothError(f"unknown defence {base!r}; choose from {', '.join(known)} (docs/defences.md)")


def _is_saved_detector(text: Any) -> bool:
    if not isinstance(text, (str, os.PathLike)):
        return False
    try:
        return (Path(text) / "detector.json").is_file()
    except (OSError, ValueError):   # not a path this system can name: a defence name, or nothing
        return False


def _load_fitted(directory: Path) -> Defence:
    """A detector saved by `deepsloth defend` (`<out>/<model>/detectors/<name>-<fingerprint>/`), loaded
    (JSON and safetensors, nothing unpickled) and registered."""
    from .detectors import Detector, load_detector
    detector = load_detector(directory)
    if not isinstance(detector, Detector):
        raise DeepslothError(f"{directory} holds a {detector.name}; a defence names a per-input detector")
    return parse_defence(register(detector))


def fingerprint(detector: Any) -> str:
    """12 hex digits identifying a fitted detector: its settings, thresholds and every tensor of its state."""
    h = hashlib.sha256(json.dumps(detector.describe(), sort_keys=True, default=str).encode())
    for key, value in sorted(detector._state().items()):
        h.update(key.encode())
        h.update(value.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def register(detector: Any) -> str:
    """Make a fitted detector nameable in attack specs (`<name>@<fingerprint>`); returns that name."""
    fp = fingerprint(detector)
    _FITTED[fp] = detector
    return f"{detector.name}@{fp}"


def list_defences() -> list:
    from .transforms import TRANSFORMS
    return sorted(TRANSFORMS) + list(CAPS) + list(DETECTORS) + list(MONITORS)


__all__ = ["Defence", "parse_defence", "register", "fingerprint", "list_defences", "CAPS", "DETECTORS"]
