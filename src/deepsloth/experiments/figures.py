"""Figures for reports: a grid of EEC curves and labelled adversarial examples.

EEC panels (docs/method.md §4.4): one row per (model, RAD budget), one column per norm; each
panel has the clean curve and every attack of that norm (the l_inf baselines PGD / UAP sit in the
l_inf column). The axes extend slightly past [0, 1] so that a curve lying on the x-axis (a
complete slowdown) and the final-exit step at cost 1 stay visible; each legend entry carries the
curve's efficacy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..io import atomic_path
from ..metrics.efficacy import eec_curve

NORM_TITLES = {"linf": "l_inf", "l2": "l_2", "l1": "l_1"}
STYLE = {  # attack -> (colour, line style, marker)
    "clean": ("black", "-", "o"), "pgd": ("tab:blue", "--", "s"), "pgd-avg": ("tab:cyan", "--", "^"),
    "pgd-max": ("tab:purple", "--", "v"), "uap": ("tab:olive", ":", "D"),
}
SCOPE_SHORT = {"sample": "per-sample", "universal": "universal", "class": "class-univ."}
SCOPE_COLOURS = {"sample": "tab:red", "universal": "tab:orange", "class": "tab:brown"}
TRANSFER_COLOURS = ("tab:blue", "tab:green", "tab:purple", "tab:cyan", "tab:pink", "tab:gray")


def _style(rec: dict, surrogates: Sequence[str] = ()):
    """(colour, line style, marker) of a record's curve; a transferred attack (crafted on one of
    `surrogates`) gets its surrogate's colour and a dashed (per-sample) or dotted line."""
    spec = rec.get("attack")
    if not spec:
        return STYLE["clean"]
    if rec.get("transfer"):
        i = list(surrogates).index(rec["transfer"]["surrogate"]["name"])
        return TRANSFER_COLOURS[i % len(TRANSFER_COLOURS)], "--" if spec["scope"] == "sample" else ":", "x"
    if spec["attack"] == "deepsloth":
        return SCOPE_COLOURS[spec["scope"]], "-", "x"
    return STYLE.get(spec["attack"], ("tab:gray", "-.", "."))


def _figure(rows: int, cols: int, w: float = 4.4, h: float = 4.3):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * cols, h * rows))
    FigureCanvasAgg(fig)
    return fig


def _eec_axes(ax) -> None:
    ax.set_xlim(-0.02, 1.04)
    ax.set_ylim(-0.04, 1.04)
    ax.grid(alpha=0.3)


def eec_panels(models: Dict[str, Dict[str, dict]]) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """The EEC grid's rows: (model, [(RAD budget, norm) per column]). One row per (model, RAD
    budget) with a column per norm; when every model has one norm only, one row per model with a
    column per RAD budget (a single tall column reads badly)."""
    layout = {}
    for name, cells in models.items():
        rads = sorted({k for rec in cells.values() for k in rec["rad"]}, key=float)
        norms = [n for n in ("linf", "l2", "l1")
                 if any((rec.get("attack") or {}).get("norm") == n for rec in cells.values())] or ["linf"]
        layout[name] = (rads, norms)
    if all(len(norms) == 1 for _, norms in layout.values()):
        return [(name, [(k, norms[0]) for k in rads]) for name, (rads, norms) in layout.items()]
    return [(name, [(k, n) for n in norms]) for name, (rads, norms) in layout.items() for k in rads]


def plot_eec_grid(models: Dict[str, Dict[str, dict]], path: Path | str, dpi: int = 130) -> Path:
    path = Path(path)
    panels = eec_panels(models)
    cols = max(len(p[1]) for p in panels)
    entries = max(sum(1 for rec in cells.values() if (rec.get("attack") or {}).get("norm", n) == n)
                  for cells in models.values() for n in ("linf", "l2", "l1"))
    fig = _figure(len(panels), cols, h=3.3 + 0.15 * entries)
    for r, (name, row) in enumerate(panels):
        cells = models[name]
        surrogates = sorted({rec["transfer"]["surrogate"]["name"] for rec in cells.values() if rec.get("transfer")})
        for c, (k, norm) in enumerate(row):
            ax = fig.add_subplot(len(panels), cols, r * cols + c + 1)
            for cell, rec in cells.items():
                spec = rec.get("attack")
                if spec is not None and spec["norm"] != norm:
                    continue
                side = rec["rad"].get(k)
                if side is None:
                    continue
                x, y = eec_curve(side["attacked"]["exit_counts"], rec["costs"])
                colour, ls, marker = _style(rec, surrogates)
                label = rec.get("label") or cell
                extra = label[label.index(" ["):] if " [" in label else ""
                short = "clean" if spec is None else label.split(" (")[0] + (
                    "" if spec["attack"] != "deepsloth" else f" {SCOPE_SHORT[spec['scope']]}") + extra
                if rec.get("transfer"):
                    short += f", transfer from {rec['transfer']['surrogate']['name']}"
                ax.plot(x, y, color=colour, linestyle=ls, marker=marker, markersize=3, linewidth=1.5,
                        label=f"{short} ({side['attacked']['efficacy']:.3f})", zorder=3 if spec else 2,
                        clip_on=False)
            _eec_axes(ax)
            # a model's records may differ in their budgets (a transfer record evaluated at an extra one)
            q = next(rec["rad"][k]["threshold"] for rec in cells.values() if k in rec["rad"])
            ax.set_title(f"{name}: {NORM_TITLES[norm]}, RAD {k}% (q={q:.2f})", fontsize=9)
            ax.set_xlabel("fraction of full-network cost", fontsize=8)
            if c == 0:
                ax.set_ylabel("fraction of inputs exited")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16),
                      ncol=1, fontsize=6.5, title="input set (efficacy)", title_fontsize=6.5, frameon=False)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def plot_examples(clean, rows: Dict[str, dict], classes: Sequence[str], path: Path | str, k: int = 6,
                  dpi: int = 130) -> Path:
    """Clean inputs and their adversarial versions, each titled with its final-exit prediction
    and the exit that answers it (under the first RAD budget's threshold).

    `rows` maps a row label to {"images": float [n,3,H,W], "pred": [n], "exit": [n] (1-based),
    "num_exits": K}; `clean` is the clean row in the same form plus "labels"."""
    path = Path(path)
    all_rows = [("clean", clean)] + list(rows.items())
    k = min(k, len(clean["images"]))
    fig = _figure(len(all_rows), k, w=1.55, h=1.75)
    for r, (label, row) in enumerate(all_rows):
        for c in range(k):
            ax = fig.add_subplot(len(all_rows), k, r * k + c + 1)
            ax.imshow(row["images"][c].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            pred = int(row["pred"][c])
            ok = pred == int(clean["labels"][c])
            ax.set_title(f"{_name(classes, pred)}\nexit {int(row['exit'][c])}/{row['num_exits']}", fontsize=6.5,
                         color="black" if ok else "tab:red")
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
            if r == 0:
                ax.set_xlabel(f"true: {_name(classes, int(clean['labels'][c]))}", fontsize=6.5)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def _name(classes: Optional[Sequence[str]], i: int) -> str:
    return classes[i] if classes and 0 <= i < len(classes) else str(i)


__all__ = ["eec_panels", "plot_eec_grid", "plot_examples"]


def plot_defences(records: Sequence[dict], path: Path | str, rad: str = "5", dpi: int = 130) -> Path:
    """Per model, the per-sample DeepSloth efficacy reduction at RAD `rad` under each defence: non-adaptive
    beside adaptive (a monitor's adaptive bar is the throttled attack's), the undefended model first."""
    import numpy as np

    from .defend import sample_reduction
    by_model: Dict[str, List[dict]] = {}
    for r in records:
        by_model.setdefault(r["model"]["name"], []).append(r)
    fig = _figure(len(by_model), 1, w=9.0, h=3.4)
    for i, name in enumerate(sorted(by_model)):
        rows = sorted(by_model[name], key=lambda r: (r["defence"]["kind"] != "none", r["defence"]["kind"],
                                                      r["defence"]["spec"]))
        ax = fig.add_subplot(len(by_model), 1, i + 1)
        labels, non, ada = [], [], []
        for r in rows:
            labels.append(r["defence"]["spec"])
            for bars, side in ((non, "non_adaptive"), (ada, "adaptive")):
                v = sample_reduction(r, rad, side)
                bars.append(np.nan if v is None else 100 * v)
        x = np.arange(len(labels))
        ax.bar(x - 0.2, non, 0.4, label="non-adaptive", color="tab:blue")
        ax.bar(x + 0.2, ada, 0.4, label="adaptive", color="tab:red")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=7)
        ax.set_ylabel(f"efficacy reduction (%), RAD {rad}%", fontsize=8)
        ax.set_title(f"{name}: per-sample DeepSloth (l_inf) under each defence", fontsize=9)
        ax.axhline(0, color="black", lw=0.6)
        for xi, v in zip(x, ada):   # a bar too low to see (the throttled attack's 0) is not a missing one
            if np.isfinite(v) and abs(v) < 3:
                ax.text(xi + 0.2, 1.5, f"{v:.0f}", ha="center", va="bottom", fontsize=6, color="tab:red")
        top = np.nanmax([*non, *ada, 100.0])
        ax.set_ylim(min(0.0, np.nanmin([*non, *ada, 0.0]) * 1.1), top * 1.18)
        ax.legend(fontsize=7, frameon=False, loc="upper center", ncol=2)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)
