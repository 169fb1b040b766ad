"""The IoT latency study (docs/method.md §6): expected latency of clean vs attacked inputs on a
device/server split, per RAD budget, plus the slowdown measured on this machine with the
early-exit runtime.

Without attacked inputs, the attacked side is the worst case: every input runs to the final exit.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..exits.runtime import EarlyExitRunner, measure_exit_times
from ..metrics.latency import (DEFAULT_BANDWIDTH_BPS, DEFAULT_DEVICE_OPS_PER_S, DEFAULT_RTT_S,
                               DEFAULT_SERVER_OPS_PER_S, LatencyModel, split_tensor_bytes)
from ..validate import check_count, check_number, check_positive
from .compare import compare
from .context import Context
from .results import Crafted


def latency_model(ctx: Context, *, device_gops: float = DEFAULT_DEVICE_OPS_PER_S / 1e9,
                  server_gops: float = DEFAULT_SERVER_OPS_PER_S / 1e9, split: Optional[int] = None,
                  bandwidth_mbps: float = DEFAULT_BANDWIDTH_BPS / 1e6, rtt_ms: float = DEFAULT_RTT_S * 1000,
                  tx_bytes: Optional[int] = None, measure: bool = False, measure_n: int = 50) -> LatencyModel:
    check_positive("device_gops", device_gops)
    check_positive("server_gops", server_gops)
    check_positive("bandwidth_mbps", bandwidth_mbps)
    check_number("rtt_ms", rtt_ms, low=0.0)
    if split is not None:
        check_number("split", split, low=1, high=ctx.num_exits, integer=True)
    if tx_bytes is not None:
        check_number("tx_bytes", tx_bytes, low=0, low_open=True, integer=True)
    common = dict(bandwidth_bps=bandwidth_mbps * 1e6, rtt_s=rtt_ms / 1000.0)
    if measure:
        check_count("measure_n", measure_n)
        timing = measure_exit_times(ctx.model, ctx.test.images[:measure_n], device=ctx.device,
                                    costs=ctx.costs.normalised)
        lat = LatencyModel.from_measured(timing["cumulative_seconds"], split=split,
                                         normalised_costs=ctx.costs.normalised,
                                         server_speedup=server_gops / device_gops, **common)
        lat.params["timing"] = timing
    else:
        lat = LatencyModel.from_ops(ctx.costs.ops, device_ops_per_s=device_gops * 1e9,
                                    server_ops_per_s=server_gops * 1e9, split=split, **common)
    lat.tx_bytes = int(tx_bytes) if tx_bytes is not None else split_tensor_bytes(
        ctx.model, tuple(ctx.test.images.shape[1:]), lat.split)
    return lat


def latency_study(ctx: Context, crafted: Optional[Crafted], lat: LatencyModel, runtime_n: int = 200) -> Dict[str, Any]:
    """The comparison under `lat`, with (without `crafted`) the worst case and, when `runtime_n`
    > 0, the single-machine slowdown measured with the early-exit runtime at batch size 1."""
    rec = compare(ctx, crafted, latency=lat)
    full_time = None
    if runtime_n and crafted is None:
        full_time = measure_exit_times(ctx.model, ctx.test.images[:runtime_n], device=ctx.device,
                                       costs=ctx.costs.normalised, desc="timing full network")["cumulative_seconds"][-1]
    for key, entry in rec["rad"].items():
        if crafted is None:   # the attacked side is the worst case: everything reaches the final exit
            worst = lat.worst_case_counts()
            entry["attacked"] = {"exit_counts": worst, "expected_latency_s": lat.expected_latency(worst),
                                 "offload_fraction": lat.offload_fraction(worst), "worst_case": True}
            entry["latency_amplification"] = entry["attacked"]["expected_latency_s"] / entry["clean"]["expected_latency_s"]
        if runtime_n:
            runner = EarlyExitRunner(ctx.model, entry["threshold"], policy=ctx.policy, device=ctx.device)
            clean_rt = runner.run(ctx.test.images[:runtime_n], batch_size=1, desc=f"runtime clean RAD {key}")
            m = {"n": min(runtime_n, ctx.n), "batch_size": 1, "early_exit": clean_rt.early_exit,
                 "clean_mean_s": clean_rt.mean_seconds}
            if crafted is not None:
                m["attacked_mean_s"] = runner.run(crafted.inputs[:runtime_n], batch_size=1,
                                                  desc=f"runtime attacked RAD {key}").mean_seconds
            else:
                m["attacked_mean_s"], m["attacked_is_full_network"] = full_time, True
            m["slowdown"] = m["attacked_mean_s"] / m["clean_mean_s"]
            entry["measured"] = m
    if crafted is None:   # not a comparison of two input sets: `report` leaves it out
        rec["format"], rec["cell"], rec["label"] = "deepsloth-latency/1", "worst-case", "worst case"
    rec["latency_model"].update(device_gops=lat.params.get("device_ops_per_s", 0) / 1e9 or None,
                                threads=torch.get_num_threads())
    return rec


__all__ = ["latency_model", "latency_study"]
