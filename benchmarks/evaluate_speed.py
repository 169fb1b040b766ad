"""Benchmark: the calibrate-and-evaluate job, our way vs. the reference implementation's way.

The job: sweep the 19 thresholds 0.05..0.95 on clean CIFAR-10 test images, pick the
thresholds for RAD 5% and 15%, and evaluate early exit at both (docs/method.md §4.2).

* ours: ONE batched all-exit forward (`collect_exit_outputs`: inference mode, BatchNorm folded
  into the convolutions), then the sweep and both evaluations as tensor ops on its outputs;
* reference-style: what the reference code did -- a one-image-at-a-time early-exit loop over
  the images for every threshold (19 sweeps), one batch-1 pass for the final-exit accuracy,
  and one more early-exit loop per RAD budget to evaluate it: 22 batch-1 passes of the model
  as trained (no BatchNorm folding, as the reference code ran it).

Also reported: the single-pass ratio, one batched all-exit pass vs. one batch-1 loop over the
same images (full network, every exit).

    python benchmarks/evaluate_speed.py --model resnet56_sdn_cifar10 --n 2000
    python benchmarks/evaluate_speed.py --model DIR --n 2000 --loop-n 200   # extrapolate the slow side

With `--loop-n M < n` the batch-1 loops run on the first M images and their time is scaled
by n / M (the loop is linear in the number of images; the printout says so). Prints ratios,
not a pass/fail; timings never go into tests.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from deepsloth.data import load_dataset
from deepsloth.device import resolve_device
from deepsloth.exits.calibrate import THRESHOLD_GRID, calibrate_thresholds, select_threshold
from deepsloth.exits.evaluate import evaluate_exits, exit_costs_for
from deepsloth.exits.forward import as_exit_list, collect_exit_outputs, to_float01
from deepsloth.exits.runtime import EarlyExitRunner
from deepsloth.metrics.efficacy import efficacy
from deepsloth.models.fold import clear_fold_cache
from deepsloth.progress import progress

RADS = (5, 15)


def pick_model(spec, device):
    from deepsloth.models import create_model
    from deepsloth.models.zoo import zoo_names
    from deepsloth.models import create_model
    candidates = [spec] if spec else ["resnet56_sdn_cifar10", "runs/resnet56-sdn"]
    for c in candidates:
        if c in zoo_names() or (Path(c) / "model.json").is_file():
            model = create_model(c, device=device)
            meta, path = model.meta, model.model_dir
            return model, meta, str(path)
    if spec:
        raise SystemExit(f"no model directory or zoo model {spec!r}")
    print("warning: no trained SDN found; timing an untrained ResNet-56 SDN (its exits fire "
          "unlike a trained one's, so the early-exit loop time is not representative)", file=sys.stderr)
    model = create_model("resnet56", "cifar10", sdn=True, seed=0).to(device).eval()
    return model, {"arch": "resnet56", "dataset": "cifar10", "input_size": 32}, "untrained resnet56 SDN"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(model, images, labels, costs, device, batch_size):
    clear_fold_cache()  # every timed run pays for its own BatchNorm folding
    sync(device)
    t0 = time.perf_counter()
    outputs = collect_exit_outputs(model, images, batch_size=batch_size, device=device, desc="batched forward")
    thresholds = calibrate_thresholds(outputs, labels, rads=RADS)
    result = evaluate_exits(outputs, labels, costs, thresholds)
    sync(device)
    return time.perf_counter() - t0, thresholds, result


@torch.inference_mode()
def batch1_full_pass(model, images, device):
    """One image at a time, full network: every exit's prediction."""
    preds = []
    for i in progress(range(len(images)), desc="batch-1 full pass", unit="img"):
        logits = as_exit_list(model(to_float01(images[i:i + 1].to(device))))
        preds.append(torch.stack([z.argmax(-1) for z in logits]).squeeze(1).cpu())
    sync(device)
    return torch.stack(preds, 1)


def reference_style(model, images, labels, costs, device):
    """22 batch-1 passes: final accuracy, 19 early-exit sweeps, 2 evaluations."""
    k = len(costs)
    t0 = time.perf_counter()
    final_correct = int((batch1_full_pass(model, images, device)[-1] == labels).sum())
    sweep = []
    for q in THRESHOLD_GRID:
        res = EarlyExitRunner(model, q, device=device, fold_bn=False).run(images, batch_size=1, warmup=0,
                                                                          desc=f"loop q={q:g}")
        correct = int((res.prediction == labels).sum())
        sweep.append({"threshold": q, "correct": correct, "accuracy": correct / len(labels),
                      "exit_counts": res.exit_counts(k)})
    chosen = {}
    for r in RADS:
        sel = select_threshold(sweep, final_correct, len(labels), r)
        runner = EarlyExitRunner(model, sel["threshold"], device=device, fold_bn=False)
        res = runner.run(images, batch_size=1, warmup=0, desc=f"evaluate RAD {r}")
        counts = res.exit_counts(k)
        chosen[str(r)] = {"threshold": sel["threshold"], "accuracy": float((res.prediction == labels).float().mean()),
                          "efficacy": efficacy(counts, costs)}
    return time.perf_counter() - t0, chosen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model directory or zoo name (default: resnet56_sdn_cifar10, "
                                                 "else runs/resnet56-sdn, else an untrained ResNet-56 SDN)")
    p.add_argument("--n", type=int, default=2000, help="CIFAR-10 test images (default 2000)")
    p.add_argument("--loop-n", type=int, default=None, help="run the batch-1 loops on the first M images only "
                                                            "and scale their time by n/M (default: all n)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help="channels-last model layout for both sides (default on CPU, as `deepsloth evaluate`)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--repeats", type=int, default=3, help="runs of our (fast) side; the median is reported")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, meta, where = pick_model(args.model, device)
    if args.channels_last is None:
        args.channels_last = device.type == "cpu"
    if args.channels_last:  # what `deepsloth evaluate` does on CPU; both sides get the same model
        model = model.to(memory_format=torch.channels_last)
    test = load_dataset(meta.get("dataset", "cifar10"), "test", args.data_root)
    images, labels = test.images[:args.n], test.labels[:args.n]
    loop_n = min(args.loop_n or args.n, args.n)
    costs = exit_costs_for(model, meta, tuple(images.shape[1:])).normalised
    print(f"model: {where} ({len(costs)} exits); {len(images)} CIFAR-10 test images; device {device}; "
          f"{torch.get_num_threads()} CPU threads; {'channels-last' if args.channels_last else 'NCHW'} layout")

    # warm-up (allocator, kernels) so neither side pays first-call costs
    collect_exit_outputs(model, images[:args.batch_size], batch_size=args.batch_size, device=device)
    batch1_full_pass(model, images[:5], device)

    runs = [ours(model, images, labels, costs, device, args.batch_size) for _ in range(args.repeats)]
    t_ours = sorted(r[0] for r in runs)[len(runs) // 2]   # the median run: robust to a busy machine
    _, th_ours, res_ours = runs[0]
    t_ref_m, th_ref = reference_style(model, images[:loop_n], labels[:loop_n], costs, device)
    scale = len(images) / loop_n
    t_ref = t_ref_m * scale

    sync(device)
    t0 = time.perf_counter()
    collect_exit_outputs(model, images, batch_size=args.batch_size, device=device, desc="batched pass")
    sync(device)
    t_pass = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch1_full_pass(model, images[:loop_n], device)
    t_loop = (time.perf_counter() - t0) * scale

    note = "" if loop_n == len(images) else f" [measured on {loop_n} images, scaled x{scale:g}]"
    print(f"ours: one batched all-exit forward + 19-threshold sweep + RAD 5/15 evaluation: {t_ours:.2f} s "
          f"(median of {len(runs)})")
    print(f"reference-style: 22 batch-1 passes (final accuracy, 19 threshold loops, 2 evaluations): "
          f"{t_ref:.2f} s{note}")
    print(f"calibrate-and-evaluate speed-up: {t_ref / t_ours:.1f}x")
    print(f"single pass: batched all-exit forward {t_pass:.2f} s vs batch-1 loop {t_loop:.2f} s{note}: "
          f"{t_loop / t_pass:.1f}x")
    for r in RADS:
        a, b = th_ours[str(r)], res_ours["rad"][str(r)]
        line = (f"RAD {r}%: ours q={a['threshold']:g} accuracy {b['accuracy'] * 100:.2f}% "
                f"efficacy {b['efficacy']:.3f}")
        if loop_n == len(images):
            c = th_ref[str(r)]
            line += (f" | reference-style q={c['threshold']:g} accuracy {c['accuracy'] * 100:.2f}% "
                     f"efficacy {c['efficacy']:.3f}")
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": where, "n": len(images), "loop_n": loop_n, "device": str(device),
            "threads": torch.get_num_threads(), "channels_last": args.channels_last, "ours_s": t_ours, "ours_runs_s": [r[0] for r in runs], "reference_style_s": t_ref,
            "ratio": t_ref / t_ours, "batched_pass_s": t_pass, "batch1_pass_s": t_loop,
            "single_pass_ratio": t_loop / t_pass, "ours": res_ours["rad"], "reference_style": th_ref}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
