"""Per-exit inference cost, measured by running the model once and counting every op.

The count is taken at the ATen level (a `TorchDispatchMode`), so it sees what module hooks
miss: residual additions, the ICs' max/avg mixing, functional pooling. Exit i's cumulative
cost is the count at the moment its logits are produced, which includes the whole path from
the input and every earlier IC head (docs/method.md §4.3), for any model whose forward evaluates its
exits in order and returns their logits as a list.

Two conventions for "ops" (multiplies plus adds):

* ``"paper"`` (default) follows the reference implementation's profiler where it matters: a
  grouped convolution is charged ``groups`` times its real work (a depthwise 3x3 conv costs as
  much as a dense one), which makes MobileNet's early exits look cheaper relative to the whole
  network. It is not an exact reproduction: the reference profiler also counts a k x k pooling
  window as k ops and misses the residual adds, the IC mixing and linear biases, which this
  counter includes, so our totals are 0.06-0.3% above the paper's and normalised costs differ
  by at most 0.001 (docs/method.md §7.5).
* ``"exact"`` charges every op its real multiplies and adds.

``macs`` is always the real multiply-accumulate count of convolutions and linear layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

CONVENTIONS = ("paper", "exact")


@dataclass
class ExitCosts:
    """Cumulative cost from the input through each exit (one input, batch size 1)."""

    ops: List[int]
    macs: List[int]
    convention: str = "paper"
    by_op: Dict[str, int] = field(default_factory=dict)

    @property
    def total_ops(self) -> int:
        return self.ops[-1]

    @property
    def normalised(self) -> List[float]:
        """c_i = C_i / C_K (docs/method.md §4.3)."""
        return [c / self.ops[-1] for c in self.ops]

    def to_dict(self) -> dict:
        return {"convention": self.convention, "ops": self.ops, "macs": self.macs,
                "normalised": self.normalised}

    @classmethod
    def from_dict(cls, d: dict) -> "ExitCosts":
        return cls(ops=[int(v) for v in d["ops"]], macs=[int(v) for v in d["macs"]],
                   convention=d.get("convention", "paper"))


def _numel(t) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _pair(v) -> int:
    if isinstance(v, (list, tuple)):
        return int(v[0]) * int(v[1] if len(v) > 1 else v[0])
    return int(v) * int(v)


class _OpCounter(TorchDispatchMode):
    def __init__(self, convention: str):
        super().__init__()
        self.convention = convention
        self.ops = 0
        self.macs = 0
        self.by_op: Dict[str, int] = {}
        self.records: List[tuple] = []  # (data_ptr, ops, macs) after each op

    def _cost(self, name: str, args, out) -> tuple:
        first = out[0] if isinstance(out, (tuple, list)) else out
        n_out = _numel(first)
        if name == "convolution":
            x, w, b = args[0], args[1], args[2]
            groups = int(args[8]) if len(args) > 8 else 1
            per_out = w.shape[1] * w[0, 0].numel()  # (C_in / groups) * kh * kw
            macs = n_out * per_out
            ops = n_out * (2 * per_out - 1 + (1 if b is not None else 0))
            if self.convention == "paper":
                ops *= groups
            return ops, macs
        if name in ("addmm", "mm", "bmm"):
            k = args[-1].shape[-2] if name != "addmm" else args[2].shape[0]
            macs = n_out * k
            ops = n_out * (2 * k - 1) + (n_out if name == "addmm" else 0)
            return ops, macs
        if "batch_norm" in name:
            return 2 * n_out, 0  # inference BN is one scale and one shift per element
        if name in ("relu", "relu_", "threshold", "hardtanh", "hardtanh_", "clamp_min", "clamp_min_"):
            return n_out, 0
        if name in ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "rsub"):
            return n_out, 0
        if name.startswith("max_pool2d"):
            return n_out * (_pair(args[1]) - 1), 0
        if name == "avg_pool2d":
            return n_out * _pair(args[1]), 0
        if name in ("_adaptive_avg_pool2d", "adaptive_avg_pool2d", "mean"):
            return _numel(args[0]), 0
        return 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        ops, macs = self._cost(name, args, out)
        if ops or macs:
            self.ops += ops
            self.macs += macs
            self.by_op[name] = self.by_op.get(name, 0) + ops
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.records.append((t.data_ptr(), self.ops, self.macs))
        return out


@torch.no_grad()
def measure_exit_costs(model: nn.Module, input_shape: Sequence[int], convention: str = "paper") -> ExitCosts:
    """Count ops and MACs from the input to each exit with one forward of batch size 1.

    `input_shape` is (C, H, W). The model is run in eval mode on CPU-agnostic zeros of its
    own device and dtype; its training flag is restored afterwards.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown cost convention {convention!r}; use one of {CONVENTIONS}")
    param = next(model.parameters())
    x = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    counter = _OpCounter(convention)
    try:
        with counter:
            outs = model(x)
    finally:
        model.train(was_training)
    if isinstance(outs, torch.Tensor):
        outs = [outs]
    ops, macs = [], []
    for logits in outs:
        ptr = logits.data_ptr()
        hit = [r for r in counter.records if r[0] == ptr]
        if not hit:
            raise RuntimeError("could not attribute an exit's logits to the op that produced them")
        ops.append(int(hit[-1][1]))
        macs.append(int(hit[-1][2]))
    return ExitCosts(ops=ops, macs=macs, convention=convention, by_op=dict(counter.by_op))
