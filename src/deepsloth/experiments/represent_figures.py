"""Figures of `experiments.represent`: one per exit, a summary across exits, and the inputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..io import atomic_path
from .figures import _figure

SETS = ("clean", "PGD", "DeepSloth")
COLOURS = {"clean": "black", "PGD": "tab:blue", "DeepSloth": "tab:red"}


def _save(fig, path: Path, dpi: int = 120) -> None:
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def _title(record: Dict[str, Any]) -> str:
    m = record["model"]
    cls = record.get("class_name") or record.get("class")
    return f"{m['name']}: {record['data']['n']} test images" + (f" of class '{cls}'" if cls is not None else "")


def plot_exit(record: Dict[str, Any], i: int, stats: Dict[str, Dict[str, List[torch.Tensor]]],
              projection: Optional[Dict[str, torch.Tensor]], path: Path) -> None:
    e = record["exits"][i]
    k = len(record["exits"])
    fig = _figure(1, 3, w=4.2, h=3.6)
    ax = fig.add_subplot(1, 3, 1)
    if projection is not None:
        for name in SETS:
            p = projection[name]
            ax.scatter(p[:, 0], p[:, 1], s=9, alpha=0.7, color=COLOURS[name], label=name,
                       marker={"clean": "o", "PGD": "s", "DeepSloth": "x"}[name])
        ev = e["pca"]["explained_variance"]
        ax.set_xlabel(f"PC 1 ({ev[0] * 100:.0f}% of clean variance)")
        ax.set_ylabel(f"PC 2 ({ev[1] * 100:.0f}%)")
        ax.set_title(f"input features of the exit head ({e['pca']['features']} dims)", fontsize=9)
        ax.legend(fontsize=7)
    else:
        ax.set_axis_off()
    for col, key, label in ((2, "max_softmax", "max softmax (confidence)"), (3, "entropy", "normalised entropy")):
        ax = fig.add_subplot(1, 3, col)
        bins = torch.linspace(0, 1, 26).tolist()
        for name in SETS:
            ax.hist(stats[name][key][i].clamp(0, 1).numpy(), bins=bins, alpha=0.45, color=COLOURS[name],
                    label=f"{name} (mean {e[name][key]['mean']:.2f})")
        if key == "max_softmax":
            for rad, q in record["thresholds"].items():
                ax.axvline(q, color="gray", linestyle="--", linewidth=1)
                ax.text(q, ax.get_ylim()[1] * 0.55, f"q@{rad}% ", fontsize=7, color="gray", rotation=90,
                        va="center", ha="right")   # mid-height: the legend sits on top
        ax.set_xlabel(label)
        ax.set_ylabel("inputs")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=7, loc="upper center")
    fig.suptitle(f"{_title(record)} - exit {i + 1}/{k} (cost {e['cost']:.2f})", fontsize=10)
    _save(fig, path)


def plot_summary(record: Dict[str, Any], path: Path) -> None:
    exits = record["exits"]
    xs = [e["exit"] for e in exits]
    fig = _figure(1, 3, w=4.4, h=3.6)
    panels = (("max_softmax", "max softmax (median, 10-90% band)"), ("entropy", "normalised entropy (median, 10-90%)"),
              ("agreement_with_final", "agrees with the final exit"))
    for col, (key, label) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 3, col)
        for name in SETS:
            if key == "agreement_with_final":
                ax.plot(xs, [e[name][key] for e in exits], marker="o", markersize=3, color=COLOURS[name], label=name)
            else:
                med = [e[name][key]["median"] for e in exits]
                ax.fill_between(xs, [e[name][key]["p10"] for e in exits], [e[name][key]["p90"] for e in exits],
                                color=COLOURS[name], alpha=0.15)
                ax.plot(xs, med, marker="o", markersize=3, color=COLOURS[name], label=name)
        if key == "max_softmax":
            for rad, q in record["thresholds"].items():
                ax.axhline(q, color="gray", linestyle="--", linewidth=1)
                ax.text(xs[-1], q, f"q@{rad}%", fontsize=7, color="gray", va="bottom", ha="right")
            ax.axhline(1 / record["num_classes"], color="gray", linestyle=":", linewidth=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("exit")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left" if key != "entropy" else "center right")
    fig.suptitle(f"{_title(record)}: per-exit statistics (dotted: 1 / number of classes)", fontsize=10)
    _save(fig, path)


def plot_images(inputs: Dict[str, torch.Tensor], logits: Dict[str, List[torch.Tensor]], classes, path: Path,
                k: int = 8) -> None:
    k = min(k, len(inputs["clean"]))
    fig = _figure(len(SETS), k, w=1.5, h=1.7)
    for r, name in enumerate(SETS):
        pred = logits[name][-1][:k].argmax(1)
        conf = torch.stack([torch.softmax(z[:k], 1).max(1).values for z in logits[name][:-1]]).max(0).values
        for c in range(k):
            ax = fig.add_subplot(len(SETS), k, r * k + c + 1)
            ax.imshow(inputs[name][c].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            label = classes[int(pred[c])] if classes else str(int(pred[c]))
            ax.set_title(f"final: {label}\nmax IC conf. {float(conf[c]):.2f}", fontsize=6.5)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    _save(fig, path)


__all__ = ["plot_exit", "plot_summary", "plot_images"]
