"""The main job: audit a multi-exit model's robustness to slowdown attacks.

On one set of test inputs: calibrate the exit thresholds on the clean inputs (docs/method.md
§4.2), then evaluate the clean inputs, per-sample DeepSloth (l_inf), universal DeepSloth (l_inf,
crafted on training inputs) and PGD (final exit) with those fixed thresholds, including the IoT
latency of each (§6). It is a small grid (`experiments.grid`) rendered by the report code:
`<out>/results/` holds one comparison per attack (rerunning reuses them), and the audit writes
`report.json`, `report.md`, `eec.png` and `examples.png`.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from .. import __version__
from ..attacks.registry import resolve_spec
from ..io import write_json
from ..models.zoo import DEFAULT_MODEL
from ..precision import check_amp, default_amp
from ..validate import check_count, check_rad
from .context import load_context
from .craft import craft
from .grid import run_cell
from .report import ceiling_note, group_by_model, render_markdown, table

DEFAULT_N = 250  # keeps the default audit within a few minutes on a 2-core CPU
AUDIT_ATTACKS = ("deepsloth-linf-sample", "deepsloth-linf-universal", "pgd-linf-sample")


@dataclass
class AuditConfig:
    model: str = DEFAULT_MODEL
    data: str = "bundled"             # bundled | test (the model's dataset test split)
    n: Optional[int] = DEFAULT_N      # first n test images (None: all)
    rads: Tuple[float, ...] = (5.0, 15.0)
    seed: int = 0
    batch_size: Optional[int] = None  # per-sample crafting batch; None: the device's (craft.crafting_batch)
    device: str = "auto"
    data_root: Optional[str] = None
    attacks: Tuple[str, ...] = AUDIT_ATTACKS
    amp: Optional[str] = None         # off | bf16 | auto; None: the device's (precision.default_amp)

    def check(self) -> None:
        for r in self.rads:
            check_rad(r)
        if self.n is not None:
            check_count("n", self.n)
        if self.batch_size is not None:
            check_count("batch_size", self.batch_size)
        check_amp(self.amp)


def run_audit(cfg: AuditConfig, out_dir: Path | str, log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    cfg.check()
    t0 = time.perf_counter()
    data = {"cifar10": "test", "tinyimagenet": "test"}.get(cfg.data, cfg.data)
    ctx = load_context(cfg.model, data=data, n=cfg.n, rads=cfg.rads, device=cfg.device, data_root=cfg.data_root)
    amp = cfg.amp or default_amp(ctx.device)
    specs = [resolve_spec(a, dataset=ctx.dataset, amp=amp, device=ctx.device) for a in cfg.attacks]
    out = Path(out_dir)
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    log(f"auditing {ctx.path} on {ctx.n} test inputs ({ctx.test.source})")
    comparisons: Dict[str, Dict[str, Any]] = {}
    for spec in [None] + specs:
        if spec is not None:
            log(f"{spec.label} ...")
        rec, _, _ = run_cell(ctx, spec, results, seed=cfg.seed, batch_size=cfg.batch_size, log=log)
        comparisons["clean" if spec is None else spec.cell] = rec
    report = {
        "format": "deepsloth-audit/2", "deepsloth_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": dict(asdict(cfg), rads=list(cfg.rads), attacks=list(cfg.attacks)),
        "model": ctx.model_record(), "data": ctx.data_record(),
        "thresholds": {k: {"threshold": v["threshold"], "accuracy": v["accuracy"]} for k, v in ctx.thresholds.items()},
        "comparisons": comparisons,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out / "report.json", report)
    models = group_by_model(list(comparisons.values()))
    from .figures import plot_eec_grid
    plot_eec_grid(models, out / "eec.png")
    _examples(ctx, specs, cfg, results, out / "examples.png")
    (out / "report.md").write_text(format_markdown(report, models))
    return report


def _examples(ctx, specs, cfg: AuditConfig, results: Path, path: Path, k: int = 6) -> None:
    """The first k inputs, clean and attacked, with prediction and answering exit."""
    from .figures import plot_examples

    key = next(iter(ctx.thresholds))
    q = ctx.thresholds[key]["threshold"]

    def row(x: torch.Tensor) -> Dict[str, Any]:
        outs = ctx.outputs(x[:k], desc="examples")
        idx, pred = ctx.policy.exit_predictions(outs, q)
        return {"images": x[:k], "pred": pred.cpu(), "exit": (idx + 1).cpu(), "num_exits": ctx.num_exits}

    clean = dict(row(ctx.clean), labels=ctx.labels[:k])
    rows = {}
    for spec in specs:
        crafted = craft(ctx, spec, seed=cfg.seed, batch_size=cfg.batch_size, out_dir=results / "adversarial")
        rows[spec.label.replace(" (", "\n(")] = row(crafted.inputs)
    plot_examples(clean, rows, ctx.test.classes, path, k=k)


def format_table(report: Dict[str, Any]) -> str:
    header, rows = table(group_by_model(list(report["comparisons"].values()))[report["model"]["name"]])
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_markdown(report: Dict[str, Any], models=None) -> str:
    models = models or group_by_model(list(report["comparisons"].values()))
    m, d = report["model"], report["data"]
    clean = report["comparisons"]["clean"]
    lm = clean["latency_model"]
    lines = [f"# DeepSloth audit: {m['arch']} ({m['dataset']})", "",
             f"- model: `{m['name']}` ({m['exits']} exits, {m['mode']}), weights sha256 {m['weights_sha256'][:12]}",
             f"- inputs: {d['n']} test images, {d['source']}",
             f"- seed {report['config']['seed']}, deepsloth {report['deepsloth_version']}, "
             f"wall time {report['wall_seconds']} s", "",
             render_markdown(models),
             "EE acc: early-exit accuracy; efficacy: area under the EEC curve; eff. red.: relative efficacy "
             "reduction vs. clean; latency x: expected IoT latency relative to clean (device/server split after "
             f"exit {lm['split']}, {lm['tx_bytes']} bytes uploaded, {lm['bandwidth_bps'] / 1e6:g} Mbit/s, "
             f"RTT {lm['rtt_s'] * 1000:g} ms).", ""]
    note = ceiling_note(report["comparisons"].get("deepsloth-linf-sample"), next(iter(report["thresholds"])))
    if note:
        lines += [note, ""]
    lines += ["![EEC curves](eec.png)", "",
              "Clean and adversarial examples (title: the prediction and the exit that answers it at the first "
              "RAD budget; red: wrong):", "", "![examples](examples.png)", ""]
    return "\n".join(lines)


__all__ = ["AuditConfig", "run_audit", "format_table", "format_markdown", "DEFAULT_N", "AUDIT_ATTACKS"]
