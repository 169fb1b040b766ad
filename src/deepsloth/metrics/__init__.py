"""Metrics of early-exit efficiency: EEC curves and efficacy (docs/method.md §4.4), and
the IoT latency model (§6). Submodules load on first use (so `latency_defaults` needs no torch)."""
from importlib import import_module

_LAZY = {"eec_curve": "efficacy", "efficacy": "efficacy", "efficacy_reduction": "efficacy",
         "exit_counts": "efficacy", "LatencyModel": "latency"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)


__all__ = list(_LAZY)
