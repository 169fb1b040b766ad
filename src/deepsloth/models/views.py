"""Single-output views of a multi-exit model, for libraries that expect one logits tensor.

    from deepsloth.models import exit_view
    final = exit_view(model)            # the final exit (computed without the internal classifiers)
    ic3 = exit_view(model, exit=3)      # exit 3 (0-based), the network stops there
    mean = exit_view(model, exit="avg") # the mean of all exits' logits

The view is a plain `nn.Module` whose forward returns [N, C] logits: torchattacks attacks, ART's
`PyTorchClassifier` and foolbox's `PyTorchModel` accept it (docs/python-api.md, "Coming from torchattacks / ART
/ foolbox"). It shares the model's parameters (nothing is copied) and follows its train/eval mode.
"""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

ExitSpec = Union[int, str]


class ExitView(nn.Module):
    def __init__(self, model: nn.Module, exit: ExitSpec = -1):
        super().__init__()
        if not (isinstance(exit, int) or exit in ("final", "avg")):
            raise ValueError(f"exit must be an exit index, 'final' or 'avg', got {exit!r}")
        self.model = model
        self.exit = -1 if exit == "final" else exit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        partial = getattr(self.model, "forward_exits", None)
        if self.exit == "avg":
            outs = self.model(x)
            return torch.stack(list(outs)).mean(dim=0)
        if partial is not None:
            need = "final" if self.exit == -1 else self.exit
            return partial(x, need)[-1]   # the list ends at the requested exit
        out = self.model(x)
        return out if isinstance(out, torch.Tensor) else list(out)[self.exit]

    def extra_repr(self) -> str:
        return f"exit={self.exit!r}"


def exit_view(model: nn.Module, exit: ExitSpec = -1) -> ExitView:
    """A single-logits view of `model`: exit -1 / "final", an exit index, or "avg"."""
    return ExitView(model, exit)


__all__ = ["ExitView", "exit_view"]
