"""Attack hyper-parameters, declared once per attack.

Every attack class lists its options in `PARAMS` (a `Params` of `Param` entries). Everything
else is derived from that declaration:

* the constructor's checks (an unknown option, or one the attack's scope does not take, is a
  one-line error naming what it takes; each value is validated by its `check`);
* `config()`, the attack's full description;
* the options the registry accepts and what a spec records (`deepsloth.attacks.registry`);
* the command-line options of `deepsloth attack`, `grid` and `audit` (`flag`).

A `default` of None means the attack resolves it from its defaults table (per norm, dataset or
preset; docs/method.md §5). What a spec records: `"always"`; `"changed"` (only when not the
default, so that the ids of specs made before the option existed stay valid); `"never"` (an alias).
`record_norms` limits recording to the norms where the option has an effect.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from ..precision import check_amp
from .norms import NORMS

SCOPES: Tuple[str, ...] = ("sample", "universal", "class")
SCOPE_LABELS = {"sample": "per-sample", "universal": "universal", "class": "class-universal"}


@dataclass(frozen=True)
class Param:
    name: str
    help: str
    default: Any = None
    scopes: Tuple[str, ...] = SCOPES
    record: str = "always"                 # "always" | "changed" | "never"
    record_norms: Tuple[str, ...] = NORMS
    flag: Optional[str] = None             # command-line option, e.g. "--eps"
    check: Optional[Callable[[Any], Any]] = None

    def recorded(self, value: Any, norm: str) -> bool:
        if self.record == "never" or norm not in self.record_norms:
            return False
        return self.record == "always" or value != self.default


def _amp(value: Any) -> Optional[str]:
    return check_amp(value)


# Every attack takes `amp` (deepsloth.precision): its forwards and backwards under bf16 autocast.
AMP = Param("amp", "bf16: forwards and backwards under bf16 autocast (deepsloth.precision); None: fp32",
            record="changed", check=_amp)


class Params:
    """The declared options of one attack."""

    def __init__(self, attack: str, *params: Param):
        self.attack = attack
        self.params: Dict[str, Param] = {p.name: p for p in (*params, AMP)}

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params.values())

    def names(self, scope: str) -> Tuple[str, ...]:
        """The options the attack takes in `scope`."""
        return tuple(p.name for p in self if scope in p.scopes)

    def resolve(self, options: Dict[str, Any], *, scope: str, defaults: Optional[Dict[str, Any]] = None,
                ) -> Dict[str, Any]:
        """Every option of `scope`: the caller's (None: not given), else `defaults`, else the declared
        default, each validated. Unknown options are a ValueError naming the ones the attack takes."""
        given = {k: v for k, v in options.items() if v is not None}
        allowed = self.names(scope)
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise ValueError(f"{self.attack} ({SCOPE_LABELS.get(scope, scope)}) takes no option "
                             f"{', '.join(unknown)}; it takes {', '.join(sorted(allowed))}")
        values: Dict[str, Any] = {}
        for name in allowed:
            p = self.params[name]
            value = given.get(name, (defaults or {}).get(name, p.default))
            values[name] = p.check(value) if (p.check is not None and value is not None) else value
        return values

    def spec(self, values: Dict[str, Any], *, norm: str, scope: str) -> Dict[str, Any]:
        """The options a spec records (see the module docstring)."""
        return {name: values[name] for name in self.names(scope)
                if name in values and self.params[name].recorded(values[name], norm)}

    def flags(self) -> Dict[str, Tuple[str, ...]]:
        """Command-line flag -> the options it sets (one per attack that takes it)."""
        out: Dict[str, Tuple[str, ...]] = {}
        for p in self:
            if p.flag:
                out[p.flag] = out.get(p.flag, ()) + (p.name,)
        return out


__all__ = ["Param", "Params", "AMP", "SCOPES", "SCOPE_LABELS"]
