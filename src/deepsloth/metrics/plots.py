"""EEC plot: one curve per input set, efficacy in the legend (docs/method.md §4.4)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

from ..io import atomic_path
from .efficacy import eec_curve, efficacy


def plot_eec(curves: Mapping[str, Tuple[Sequence, Sequence[float]]], path: os.PathLike | str,
             title: Optional[str] = None, dpi: int = 150) -> Path:
    """Write a PNG with the EEC curve of every entry of `curves`.

    `curves` maps a label ("clean", "DeepSloth", ...) to `(exits, costs)`: the exit
    histogram (or per-input exit indices) and the normalised cumulative exit costs, as
    `efficacy` takes them. The legend shows each curve's efficacy.
    """
    # An explicit Agg figure: no pyplot global state, works without a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(5.2, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, (exits, costs) in curves.items():
        x, y = eec_curve(exits, costs)
        eff = efficacy(exits, costs)
        ax.plot(x, y, marker="o", markersize=2.5, linewidth=1.6, label=f"{label} (efficacy {eff:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fraction of full-network cost")
    ax.set_ylabel("fraction of inputs exited (cumulative)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


__all__ = ["plot_eec"]
