"""Metrics of early-exit efficiency: EEC curves and efficacy (SPEC 4.4), their plots, and
the IoT latency model (SPEC 6)."""
from .efficacy import eec_curve, efficacy, efficacy_reduction, exit_counts
from .latency import LatencyModel

__all__ = ["eec_curve", "efficacy", "efficacy_reduction", "exit_counts", "LatencyModel"]
