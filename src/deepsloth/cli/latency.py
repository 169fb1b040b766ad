"""`deepsloth latency --model M [--inputs RESULT]`: IoT latency of clean vs attacked inputs
(experiments.latency; docs/method.md §6). Without --inputs the attacked side is the worst case."""
from __future__ import annotations

from .common import (add_context, add_json, context_from, emit, nonempty, nonneg_float, nonneg_int,
                     positive_float, positive_int, thread_count, writable_file)


def run(args) -> int:
    import torch

    from ..experiments.results import load_result
    from ..experiments.latency import latency_model, latency_study

    if args.out:
        writable_file(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = context_from(args)
    crafted = load_result(ctx, args.inputs) if args.inputs else None
    lat = latency_model(ctx, device_gops=args.device_gops, server_gops=args.server_gops, split=args.split,
                        bandwidth_mbps=args.bandwidth_mbps, rtt_ms=args.rtt_ms, tx_bytes=args.tx_bytes,
                        measure=args.measure, measure_n=args.measure_n)
    rec = latency_study(ctx, crafted, lat, runtime_n=args.runtime_n)
    if args.out:
        from ..io import write_json
        write_json(args.out, rec)
    return emit(rec, args.json, print_report)


def _ms(s) -> str:
    return "n/a" if s is None else f"{s * 1000:.2f} ms"


def print_report(r: dict) -> None:
    lm, m = r["latency_model"], r["model"]
    k = m["exits"]
    print(f"IoT latency: {m['arch']} ({k} exits) on {m['dataset']}; exits 1..{lm['split']} on the device, "
          f"{lm['split'] + 1}..{k} on the server ({lm['source']} compute times)")
    print(f"  upload {lm['tx_bytes']} B at {lm['bandwidth_bps'] / 1e6:g} Mbit/s = {_ms(lm['upload_s'])}, "
          f"round trip {_ms(lm['rtt_s'])}; full network on the device {_ms(lm['device_times'][-1])}")
    for key, e in r["rad"].items():
        c, a = e["clean"], e["attacked"]
        adv = "worst case" if a.get("worst_case") else "attacked"
        print(f"RAD {key:>4}% (q={e['threshold']:g}): clean {_ms(c['expected_latency_s'])} "
              f"({c['offload_fraction'] * 100:.0f}% offloaded)  {adv} {_ms(a['expected_latency_s'])} "
              f"({a['offload_fraction'] * 100:.0f}% offloaded)  amplification {e['latency_amplification']:.2f}x")
        ms = e.get("measured")
        if ms:
            what = "full network" if ms.get("attacked_is_full_network") else "attacked"
            print(f"           measured here (early-exit runtime, batch 1, {ms['n']} inputs): clean "
                  f"{_ms(ms['clean_mean_s'])}  {what} {_ms(ms['attacked_mean_s'])}  slowdown {ms['slowdown']:.2f}x")


def register(sub) -> None:
    from ..metrics.latency_defaults import BANDWIDTH_MBPS, DEVICE_GOPS, RTT_MS, SERVER_GOPS

    p = sub.add_parser("latency", help="IoT latency of clean vs attacked inputs (partitioned device/server)",
                       description="Expected latency of a multi-exit model split between an edge device (exits "
                                   "1..S) and a server (the rest), clean vs attacked, per RAD budget "
                                   "(docs/method.md §6), and the slowdown measured here with the early-exit runtime.")
    add_context(p)
    p.add_argument("--inputs", default=None, type=nonempty,
                   help="attack result (default: the worst case, all to the final exit)")
    p.add_argument("--device-gops", type=positive_float, default=DEVICE_GOPS, help="edge device G ops/s (%(default)g)")
    p.add_argument("--server-gops", type=positive_float, default=SERVER_GOPS, help="server G ops/s (%(default)g)")
    p.add_argument("--split", type=positive_int, default=None,
                   help="exits 1..S run on the device (default: the last IC at <= 50%% of the cost)")
    p.add_argument("--bandwidth-mbps", type=positive_float, default=BANDWIDTH_MBPS, help="uplink Mbit/s (%(default)g)")
    p.add_argument("--rtt-ms", type=nonneg_float, default=RTT_MS, help="round-trip time in ms (%(default)g)")
    p.add_argument("--tx-bytes", type=positive_int, default=None,
                   help="bytes uploaded per offloaded input (default: the float32 block output at the split)")
    p.add_argument("--measure", action="store_true", help="time the per-exit compute here (batch 1) as the device's")
    p.add_argument("--measure-n", type=positive_int, default=50, help="images timed by --measure")
    p.add_argument("--runtime-n", type=nonneg_int, default=200, help="inputs for the measured slowdown; 0 skips it")
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads for torch (at most the CPUs here)")
    p.add_argument("--out", default=None, type=nonempty, metavar="JSON", help="also write the result to this JSON file")
    add_json(p)
    p.set_defaults(func=run)
