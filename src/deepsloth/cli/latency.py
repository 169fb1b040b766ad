"""`deepsloth latency --model DIR [--inputs FILE]`: IoT latency of clean vs adversarial inputs.

The partitioned device/server model of SPEC 6 (`deepsloth.metrics.latency`) gives the
expected latency of the clean inputs and of the adversarial ones (without `--inputs`: the
worst case, every input running to the final exit) and the amplification, per RAD budget.
Exit histograms come from one batched all-exit forward. The measured single-machine slowdown
(true early-exit runtime, batch size 1, adversarial vs clean wall-clock) is reported too.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from ..exits.forward import collect_exit_outputs
from ..exits.runtime import EarlyExitRunner, measure_exit_times
from ..metrics.latency import (DEFAULT_BANDWIDTH_BPS, DEFAULT_DEVICE_OPS_PER_S, DEFAULT_RTT_S,
                               DEFAULT_SERVER_OPS_PER_S, LatencyModel, split_tensor_bytes)
from ..errors import DeepslothError
from ..io import write_json
from .common import add_json, emit, nonneg_float, nonneg_int, positive_float, positive_int
from .evaluate import add_common, inputs_summary, load_context


def run_latency(args) -> Dict[str, Any]:
    def check_split(k: int) -> None:
        if args.split is not None and not 1 <= args.split <= k:
            raise DeepslothError(f"--split must be an exit number in 1..{k} (exits 1..S run on the device)")

    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = load_context(args, need_clean_outputs=True, check_exits=check_split)
    k = ctx.num_exits
    input_shape = tuple(ctx.clean_images.shape[1:])
    costs = ctx.costs.normalised
    common = dict(bandwidth_bps=args.bandwidth_mbps * 1e6, rtt_s=args.rtt_ms / 1000.0)

    timing = None
    if args.measure:
        timing = measure_exit_times(ctx.model, ctx.clean_images[:args.measure_n], device=ctx.device,
                                    costs=costs)
        lat = LatencyModel.from_measured(timing["cumulative_seconds"], split=args.split, normalised_costs=costs,
                                         server_speedup=args.server_gops / args.device_gops, **common)
    else:
        lat = LatencyModel.from_ops(ctx.costs.ops, device_ops_per_s=args.device_gops * 1e9,
                                    server_ops_per_s=args.server_gops * 1e9, split=args.split, **common)
    lat.tx_bytes = int(args.tx_bytes) if args.tx_bytes is not None else \
        split_tensor_bytes(ctx.model, input_shape, lat.split)

    adv_outputs = None
    if args.inputs:
        adv_outputs = collect_exit_outputs(ctx.model, ctx.adv_images, batch_size=args.batch_size,
                                           device=ctx.device, desc="adversarial forward")
    adv_name = "adversarial" if args.inputs else "worst case (all inputs to the final exit)"

    full_time = None
    if args.runtime_n and not args.inputs:
        full_time = measure_exit_times(ctx.model, ctx.clean_images[:args.runtime_n], device=ctx.device,
                                       costs=costs, desc="timing full network")["cumulative_seconds"][-1]
    per_rad: Dict[str, Any] = {}
    for key, th in ctx.thresholds.items():
        q = th["threshold"]
        clean_idx = ctx.policy.exit_index(ctx.clean_outputs, q)
        clean_counts = torch.bincount(clean_idx, minlength=k).tolist()
        if adv_outputs is not None:
            adv_counts = torch.bincount(ctx.policy.exit_index(adv_outputs, q), minlength=k).tolist()
        else:
            adv_counts = lat.worst_case_counts()
        e_clean, e_adv = lat.expected_latency(clean_counts), lat.expected_latency(adv_counts)
        entry: Dict[str, Any] = {
            "threshold": q,
            "clean": {"expected_latency_s": e_clean, "offload_fraction": lat.offload_fraction(clean_counts),
                      "exit_counts": clean_counts},
            "adversarial": {"expected_latency_s": e_adv, "offload_fraction": lat.offload_fraction(adv_counts),
                            "exit_counts": adv_counts, "worst_case": adv_outputs is None},
            "amplification": e_adv / e_clean,
        }
        if args.runtime_n:
            runner = EarlyExitRunner(ctx.model, q, policy=ctx.policy, device=ctx.device)
            m = args.runtime_n
            clean_rt = runner.run(ctx.clean_images[:m], batch_size=1, desc=f"runtime clean RAD {key}")
            measured = {"n": min(m, len(ctx.clean_images)), "batch_size": 1, "early_exit": clean_rt.early_exit,
                        "clean_mean_s": clean_rt.mean_seconds}
            if args.inputs:
                adv_rt = runner.run(ctx.adv_images[:m], batch_size=1, desc=f"runtime adversarial RAD {key}")
                measured["adversarial_mean_s"] = adv_rt.mean_seconds
            else:
                measured["adversarial_mean_s"] = full_time
                measured["adversarial_is_full_network"] = True
            measured["slowdown"] = measured["adversarial_mean_s"] / measured["clean_mean_s"]
            entry["measured"] = measured
        per_rad[key] = entry

    result = {
        "threads": torch.get_num_threads(),
        "model": str(ctx.path), "arch": ctx.meta.get("arch"), "dataset": ctx.meta.get("dataset"),
        "exits": k, "policy": ctx.policy.describe(), "n": len(ctx.clean_images),
        "inputs": inputs_summary(args, ctx), "adversarial_label": adv_name,
        "latency_model": dict(lat.to_dict(), device_gops=args.device_gops, server_gops=args.server_gops,
                              timing=timing),
        "rad": per_rad,
    }
    if args.out:
        write_json(args.out, result)
    return result


def _ms(s) -> str:
    return "n/a" if s is None else f"{s * 1000:.2f} ms"


def print_report(r: Dict[str, Any]) -> None:
    lm = r["latency_model"]
    k = r["exits"]
    if lm["source"] == "measured":
        src = f"device times measured here, server {lm['params']['server_speedup']:g}x faster"
    else:
        src = f"device {lm['device_gops']:g} GOPS, server {lm['server_gops']:g} GOPS"
    print(f"IoT latency: {r['arch']} ({k} exits) on {r['dataset']}; exits 1..{lm['split']} on the device, "
          f"{lm['split'] + 1}..{k} on the server")
    print(f"  compute: {src}; full network on device {_ms(lm['device_times'][-1])}")
    print(f"  upload {lm['tx_bytes']} B at {lm['bandwidth_bps'] / 1e6:g} Mbit/s = {_ms(lm['upload_s'])}, "
          f"round trip {_ms(lm['rtt_s'])}")
    adv = "worst case" if r["inputs"]["source"] == "clean" else "adversarial"
    for key, e in r["rad"].items():
        c, a = e["clean"], e["adversarial"]
        print(f"RAD {key:>4}% (q={e['threshold']:g}): clean {_ms(c['expected_latency_s'])} "
              f"({c['offload_fraction'] * 100:.0f}% offloaded)  {adv} {_ms(a['expected_latency_s'])} "
              f"({a['offload_fraction'] * 100:.0f}% offloaded)  amplification {e['amplification']:.2f}x")
        m = e.get("measured")
        if m:
            what = "full network" if m.get("adversarial_is_full_network") else "adversarial"
            print(f"           measured here (early-exit runtime, batch 1, {m['n']} inputs): clean "
                  f"{_ms(m['clean_mean_s'])}  {what} {_ms(m['adversarial_mean_s'])}  slowdown {m['slowdown']:.2f}x"
                  + ("" if m["early_exit"] else "  [model has no stem/blocks layout: full forward]"))


def run(args) -> int:
    return emit(run_latency(args), args.json, print_report)


def register(sub) -> None:
    p = sub.add_parser("latency", help="IoT latency of clean vs adversarial inputs (partitioned device/server)",
                       description="Expected latency of a multi-exit model split between an edge device "
                                   "(exits 1..S) and a server (the rest), for clean and adversarial inputs, "
                                   "and the amplification E[T|adv] / E[T|clean] per RAD budget (SPEC 6). "
                                   "Also measures the single-machine slowdown with the early-exit runtime.")
    add_common(p)
    p.add_argument("--device-gops", type=positive_float, default=DEFAULT_DEVICE_OPS_PER_S / 1e9,
                   help="edge device speed in G ops/s (default: %(default)g, a Raspberry-Pi-class CPU)")
    p.add_argument("--server-gops", type=positive_float, default=DEFAULT_SERVER_OPS_PER_S / 1e9,
                   help="server speed in G ops/s (default: %(default)g, a GPU)")
    p.add_argument("--split", type=positive_int, default=None,
                   help="exits 1..S run on the device (default: the last IC at <= 50%% of the cost)")
    p.add_argument("--bandwidth-mbps", type=positive_float, default=DEFAULT_BANDWIDTH_BPS / 1e6,
                   help="uplink bandwidth in Mbit/s (default: %(default)g)")
    p.add_argument("--rtt-ms", type=nonneg_float, default=DEFAULT_RTT_S * 1000,
                   help="network round-trip time in ms (default: %(default)g)")
    p.add_argument("--tx-bytes", type=int, default=None,
                   help="bytes uploaded per offloaded input (default: the float32 block output at the split, "
                        "from a dummy forward)")
    p.add_argument("--measure", action="store_true",
                   help="time the per-exit compute on this machine (batch 1) and use it as the device's "
                        "(the server is server-gops/device-gops times faster) instead of ops / speed")
    p.add_argument("--measure-n", type=positive_int, default=50, help="images timed by --measure (default: 50)")
    p.add_argument("--runtime-n", type=nonneg_int, default=200,
                   help="inputs run through the early-exit runtime for the measured slowdown; 0 skips it "
                        "(default: 200)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 gives steadier batch-1 timings "
                        "on a busy machine)")
    p.add_argument("--out", default=None, metavar="JSON", help="also write the result to this JSON file")
    add_json(p)
    p.set_defaults(func=run)
