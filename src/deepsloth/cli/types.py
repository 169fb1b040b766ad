"""argparse types: every number an option takes is checked here (finite, in range) before any work."""
from __future__ import annotations

import argparse
import os
from fractions import Fraction
from typing import Any, Callable

from ..errors import DeepslothError
from ..validate import check_number, check_rad


def _type(check: Callable[[str, Any], Any], parse: Callable[[str], Any] = float):
    def convert(text: str):
        try:
            value = parse(text)
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            return check("value", value)
        except DeepslothError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("value ", "", 1)) from None
    return convert


def _fraction(text: str) -> float:
    text = text.strip()
    return float(Fraction(text)) if "/" in text else float(text)


positive_int = _type(lambda n, v: check_number(n, v, low=1, integer=True), lambda t: int(t, 10))
nonneg_int = _type(lambda n, v: check_number(n, v, low=0, integer=True), lambda t: int(t, 10))
positive_float = _type(lambda n, v: check_number(n, v, low=0.0, low_open=True))
nonneg_float = _type(lambda n, v: check_number(n, v, low=0.0))
positive_number = _type(lambda n, v: check_number(n, v, low=0.0, low_open=True), _fraction)  # 8/255 allowed
any_int = _type(lambda n, v: check_number(n, v, integer=True), lambda t: int(t, 10))
rad_value = _type(lambda n, v: check_rad(v))


def seed_int(text: str) -> int:
    """Seeds reach torch.manual_seed, which takes 64-bit values: 0 .. 2^63 - 1, kept exact (no float)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number (an integer), got {text!r}") from None
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^63 - 1], got {value}")
    return value



def thread_count(text: str) -> int:
    """--threads: 1 .. the number of CPUs (far more threads than cores crash the OpenMP runtime)."""
    cpus = os.cpu_count() or 1
    return _type(lambda n, v: check_number(n, v, low=1, high=cpus, integer=True), lambda t: int(t, 10))(text)



def nonempty(text: str) -> str:
    """argparse type of names and paths: an empty string is an error (not '.' or a default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty value")
    return text
