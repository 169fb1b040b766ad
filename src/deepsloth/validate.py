"""Checks of numeric arguments at the library boundary (docs/method.md §9, error behaviour).

Every attack, metric and command passes its numbers through `check_number`, so a negative,
NaN, infinite or out-of-range value is one clear `DeepslothError` naming the argument and
the allowed range, raised before any work. This module imports nothing heavy (the CLI uses
it while parsing arguments, before torch is loaded).
"""
from __future__ import annotations

import math
from typing import Optional

from .errors import DeepslothError


def _fmt(v: float) -> str:
    return format(v, "g")


def check_number(name: str, value, *, low: Optional[float] = None, high: Optional[float] = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False):
    """`value` as a float (or int), or a DeepslothError naming `name` and the allowed range.

    `low`/`high` bound the value (inclusive unless `low_open`/`high_open`)."""
    what = "an integer" if integer else "a number"
    if isinstance(value, bool):
        raise DeepslothError(f"{name} must be {what}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DeepslothError(f"{name} must be {what}, got {value!r}") from None
    if not math.isfinite(number):
        raise DeepslothError(f"{name} must be a finite number, got {value!r}")
    if integer:
        if number != int(number):
            raise DeepslothError(f"{name} must be an integer, got {value!r}")
        number = int(number)
    bad = ((low is not None and (number < low or (low_open and number == low)))
           or (high is not None and (number > high or (high_open and number == high))))
    if bad:
        lo = "" if low is None else ("(" if low_open else "[") + _fmt(low)
        hi = "" if high is None else _fmt(high) + (")" if high_open else "]")
        if low is not None and high is not None:
            allowed = f"in {lo}, {hi}"
        elif low is not None:
            allowed = ("> " if low_open else ">= ") + _fmt(low)
        else:
            allowed = ("< " if high_open else "<= ") + _fmt(high)
        raise DeepslothError(f"{name} must be {allowed}, got {_fmt(number) if not integer else number}")
    return number


def check_positive(name: str, value) -> float:
    return check_number(name, value, low=0.0, low_open=True)


def check_count(name: str, value, minimum: int = 1) -> int:
    return check_number(name, value, low=minimum, integer=True)


def check_rad(value) -> float:
    """A relative-accuracy-drop budget in percent: in (0, 100)."""
    return check_number("RAD budget (percent)", value, low=0.0, high=100.0, low_open=True, high_open=True)


def check_eps(value, norm: str, name: str = "eps") -> float:
    """A perturbation budget: > 0, and at most 1 for l_inf (pixels live in [0, 1])."""
    return check_number(name, value, low=0.0, low_open=True, high=1.0 if norm == "linf" else None)
