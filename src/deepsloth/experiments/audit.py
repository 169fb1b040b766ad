"""The main job: audit a multi-exit model's robustness to slowdown attacks.

On one set of test inputs: calibrate the exit thresholds on the clean inputs (SPEC 4.2), then
evaluate clean inputs, per-sample DeepSloth (l_inf), universal DeepSloth (l_inf, crafted on
training inputs) and PGD (final exit) with those fixed thresholds, and model the IoT latency
of each (SPEC 6). Writes `report.json`, `report.md`, `eec.png` and `examples.png`.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import __version__
from ..attacks import PGD, DeepSloth, apply_universal, norm_report
from ..data import Dataset, load_dataset
from ..data.bundled import load_bundled
from ..device import resolve_device
from ..errors import DeepslothError
from ..exits.calibrate import calibration_for
from ..exits.evaluate import evaluate_exits, exit_costs_for
from ..exits.forward import collect_exit_outputs
from ..io import write_json
from ..metrics.efficacy import efficacy_reduction
from ..metrics.latency import LatencyModel, split_tensor_bytes
from ..metrics.plots import plot_eec
from ..models.zoo import DEFAULT_MODEL, load_model
from ..progress import progress

DEFAULT_N = 250  # keeps the default audit within about 3 minutes on a 2-core CPU


@dataclass
class AuditConfig:
    model: str = DEFAULT_MODEL
    data: str = "bundled"             # bundled | cifar10 | tinyimagenet
    n: Optional[int] = DEFAULT_N      # first n test images (None: all)
    rads: Tuple[float, ...] = (5.0, 15.0)
    seed: int = 0
    batch_size: int = 125
    universal_images: int = 250       # training images the universal perturbation is crafted on
    device: str = "auto"
    data_root: Optional[str] = None
    attacks: Tuple[str, ...] = ("deepsloth", "deepsloth-universal", "pgd")


LABELS = {"clean": "clean", "deepsloth": "DeepSloth (per-sample, l_inf)",
          "deepsloth-universal": "DeepSloth (universal, l_inf)", "pgd": "PGD (final exit, l_inf)"}
SHORT = {"clean": "clean", "deepsloth": "DeepSloth", "deepsloth-universal": "universal DS", "pgd": "PGD"}


def _inputs(cfg: AuditConfig, dataset: str) -> Tuple[Dataset, Dataset]:
    """(test inputs, training inputs for universal crafting)."""
    if cfg.data == "bundled":
        if dataset != "cifar10":
            raise DeepslothError(f"the bundled inputs are CIFAR-10, the model is a {dataset} model; "
                                 f"use --data {dataset}")
        test, train = load_bundled("test"), load_bundled("train")
    else:
        if cfg.data != dataset:
            raise DeepslothError(f"--data {cfg.data} does not match the model's dataset ({dataset})")
        test, train = load_dataset(dataset, "test", cfg.data_root), load_dataset(dataset, "train", cfg.data_root)
    if cfg.n is not None:
        if cfg.n > len(test):
            raise DeepslothError(f"--n {cfg.n} is more than the {len(test)} available test images")
        test = test.subset(cfg.n)
    return test, train.subset(min(cfg.universal_images, len(train)))


def _batched(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch_size: int, desc: str) -> torch.Tensor:
    out = []
    for i in progress(range(0, len(x), batch_size), desc=desc, total=(len(x) + batch_size - 1) // batch_size):
        out.append(fn(x[i:i + batch_size], y[i:i + batch_size]))
    return torch.cat(out)


def _craft(name: str, model: nn.Module, cfg: AuditConfig, dataset: str, x: torch.Tensor, y: torch.Tensor,
           train: Dataset) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Adversarial inputs for attack `name`, and its record (config, achieved norms, time)."""
    t0 = time.perf_counter()
    if name == "deepsloth":
        atk = DeepSloth(model, norm="linf", scope="sample", dataset=dataset, seed=cfg.seed)
        x_adv = _batched(lambda a, b: atk(a), x, y, cfg.batch_size, "DeepSloth")
    elif name == "deepsloth-universal":
        atk = DeepSloth(model, norm="linf", scope="universal", dataset=dataset, seed=cfg.seed,
                        n_images=len(train), batch_size=len(train))
        xt = train.images.float() / 255
        delta = atk(xt)
        x_adv = apply_universal(x, delta)
    elif name == "pgd":
        atk = PGD(model, objective="final", norm="linf", seed=cfg.seed)
        x_adv = _batched(lambda a, b: atk(a, b), x, y, cfg.batch_size, "PGD")
    else:
        raise DeepslothError(f"unknown audit attack {name!r}")
    record = {"config": atk.config(), "seconds": round(time.perf_counter() - t0, 2),
              "norms": norm_report(x_adv, x)}
    if name == "deepsloth-universal":
        record["crafted_on"] = f"{len(train)} training images ({train.source})"
    return x_adv, record


def run_audit(cfg: AuditConfig, out_dir: Optional[Path] = None,
              log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    model, meta, model_dir = load_model(cfg.model, device)
    dataset = meta["dataset"]
    if meta.get("mode") == "cnn":
        raise DeepslothError(f"{cfg.model} is a plain CNN (one exit); audit a multi-exit model")
    test, train = _inputs(cfg, dataset)
    x = test.images.float() / 255
    y = test.labels
    log(f"auditing {model_dir} on {len(test)} test inputs from the {test.source or dataset}")

    clean_out = collect_exit_outputs(model, x, device=device, desc="clean forward")
    thresholds, calib = calibration_for(model_dir, model, meta, test.images, y, rads=cfg.rads,
                                        device=device, outputs=clean_out)
    costs = exit_costs_for(model, meta)
    latency = LatencyModel.from_ops(costs.ops, tx_bytes=0)
    latency = LatencyModel.from_ops(costs.ops, split=latency.split,
                                    tx_bytes=split_tensor_bytes(model, tuple(x.shape[1:]), latency.split))

    sets: Dict[str, Dict[str, Any]] = {}
    adversarial: Dict[str, torch.Tensor] = {}
    for name in ("clean",) + tuple(cfg.attacks):
        if name == "clean":
            outputs, record = clean_out, {}
        else:
            log(f"crafting {LABELS[name]} ...")
            x_adv, record = _craft(name, model, cfg, dataset, x, y, train)
            adversarial[name] = x_adv
            outputs = collect_exit_outputs(model, x_adv, device=device, desc=f"{name} forward")
        result = evaluate_exits(outputs, y, costs.normalised, thresholds)
        result.update(record)
        result["label"] = LABELS[name]
        sets[name] = result

    clean = sets["clean"]
    for name, result in sets.items():
        for key, r in result["rad"].items():
            c = clean["rad"][key]
            r["efficacy_reduction"] = efficacy_reduction(c["efficacy"], r["efficacy"])
            r["expected_latency_s"] = latency.expected_latency(r["exit_counts"])
            r["latency_amplification"] = latency.amplification(c["exit_counts"], r["exit_counts"])
            r["early_exit_fraction"] = 1.0 - r["exit_counts"][-1] / max(1, sum(r["exit_counts"]))

    report = {
        "deepsloth_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": dict(asdict(cfg), rads=list(cfg.rads), attacks=list(cfg.attacks)),
        "seed": cfg.seed,
        "device": str(device),
        "model": {"spec": cfg.model, "path": str(model_dir), "arch": meta.get("arch"),
                  "dataset": dataset, "mode": meta.get("mode"), "exits": meta.get("exits"),
                  "recorded_accuracy": meta.get("accuracy", {}).get("final")},
        "inputs": {"source": test.source, "n": len(test), "universal_crafting_images": len(train)},
        "thresholds": {k: {"threshold": v["threshold"], "accuracy": v["accuracy"]} for k, v in thresholds.items()},
        "calibration": {"cached": calib["cached"], "path": calib["path"],
                        "reference_accuracy": calib["reference_accuracy"]},
        "latency_model": {k: v for k, v in latency.to_dict().items()
                          if k in ("split", "tx_bytes", "bandwidth_bps", "rtt_s", "params", "upload_s")},
        "sets": sets,
        "wall_seconds": None,
    }
    report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    if out_dir is not None:
        write_report(report, out_dir, costs.normalised, x, adversarial)
    return report


# ----------------------------------------------------------------------------- rendering

def table_rows(report: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    rads = list(report["thresholds"])
    header = ["input set", "final acc"]
    for k in rads:
        header += [f"EE acc@{k}%", f"efficacy@{k}%", f"eff. red.@{k}%", f"latency x@{k}%"]
    rows = []
    for name, s in report["sets"].items():
        row = [s["label"], f"{s['final_accuracy'] * 100:.1f}%"]
        for k in rads:
            r = s["rad"][k]
            row += [f"{r['accuracy'] * 100:.1f}%", f"{r['efficacy']:.3f}",
                    "-" if name == "clean" else f"{r['efficacy_reduction'] * 100:.1f}%",
                    f"{r['latency_amplification']:.2f}"]
        rows.append(row)
    return header, rows


def format_table(report: Dict[str, Any]) -> str:
    header, rows = table_rows(report)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_markdown(report: Dict[str, Any]) -> str:
    header, rows = table_rows(report)
    m = report["model"]
    th = ", ".join(f"RAD {k}%: q = {v['threshold']:.2f}" for k, v in report["thresholds"].items())
    lines = [f"# DeepSloth audit: {m['arch']} SDN ({m['dataset']})", "",
             f"- model: `{m['spec']}` ({m['exits']} exits, {m['mode']})",
             f"- inputs: {report['inputs']['n']} test images ({report['inputs']['source']})",
             f"- thresholds (calibrated on the clean inputs): {th}",
             f"- seed {report['seed']}, deepsloth {report['deepsloth_version']}, "
             f"wall time {report['wall_seconds']} s on {report['device']}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lm = report["latency_model"]
    lines += ["", "EE acc: early-exit accuracy; efficacy: area under the EEC curve (SPEC 4.4); eff. red.: "
              "relative efficacy reduction vs. clean; latency x: expected IoT latency relative to clean "
              f"(device/server split after exit {lm['split']}, {lm['tx_bytes']} bytes uploaded, "
              f"{lm['bandwidth_bps'] / 1e6:g} Mbit/s, RTT {lm['rtt_s'] * 1000:g} ms).", "",
              "![EEC curves](eec.png)", "", "Clean (top) and adversarial examples:", "", "![examples](examples.png)", ""]
    return "\n".join(lines)


def write_report(report: Dict[str, Any], out_dir: Path, costs: Sequence[float], x: torch.Tensor,
                 adversarial: Dict[str, torch.Tensor]) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = next(iter(report["thresholds"]))
    curves = {s["label"]: (s["rad"][first]["exit_counts"], costs) for s in report["sets"].values()}
    plot_eec(curves, out_dir / "eec.png", title=f"EEC curves at RAD {first}% (q = "
                                                f"{report['thresholds'][first]['threshold']:.2f})")
    save_examples(x, adversarial, out_dir / "examples.png")
    write_json(out_dir / "report.json", report)
    (out_dir / "report.md").write_text(format_markdown(report))


def save_examples(x: torch.Tensor, adversarial: Dict[str, torch.Tensor], path: Path, k: int = 6) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("clean", x)] + [(n, a) for n, a in adversarial.items()]
    k = min(k, len(x))
    fig, axes = plt.subplots(len(rows), k, figsize=(1.4 * k, 1.5 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(k):
            ax = axes[r][c]
            ax.imshow(imgs[c].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(SHORT[label], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
