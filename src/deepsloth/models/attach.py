"""Exits for any model: `attach_exits(model, at=[module names])` (docs/python-api.md, "Bring your own model").

    net = torchvision_style_resnet()                                  # any nn.Module returning logits
    sdn = attach_exits(net, at=["layer1", "layer2", "layer3"], num_classes=10, input_shape=(3, 32, 32))
    sdn(x)        # [exit_1, exit_2, exit_3, final]: the multi-exit contract, so every attack and metric works

Forward hooks on the named modules hand their outputs to one head per exit, at the moment the module
produces them (so the op counter charges each exit the backbone up to its point, docs/method.md §4.3):

* a feature map [N, C, H, W] gets the SDN head (`InternalClassifier`: mixed max/avg pooling, Linear);
* a token sequence [N, T, D] gets a `TokenHead`: the CLS token (or the mean token), LayerNorm, Linear;
* `head=` takes a function (shape without batch, num_classes) -> nn.Module for anything else.

The hooks live only while the wrapper runs: the model keeps its own forward, and `remove()` hands
it back unchanged. The backbone is `net.net`; IC-only training freezes it and trains `net.ics`.

Real early exit (`EarlyExitRunner`): `forward_early` runs the backbone and asks after every exit
which inputs leave. Inputs that leave are dropped from the batch flowing on (the hook returns the
remaining rows); when none is left, the forward stops there. Backbones whose later layers do not
depend on the batch size seen at the input (sequential CNNs, transformer blocks) run this way; the
runtime's agreement check (`compare_with_batched`) says when one does not.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .sdn import InternalClassifier, select_rows

HeadFactory = Callable[[Tuple[int, ...], int], nn.Module]


class TokenHead(nn.Module):
    """[N, T, D] tokens -> the CLS token (index 0) or the mean token -> LayerNorm -> Linear."""

    def __init__(self, dim: int, num_classes: int, pool: str = "cls"):
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"token pooling must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = h[:, 0] if self.pool == "cls" else h.mean(dim=1)
        return self.linear(self.norm(z))


def default_head(shape: Tuple[int, ...], num_classes: int) -> nn.Module:
    """The head for a module output of `shape` (without the batch): SDN-style for [C, H, W] and
    vectors, a CLS-token head for [T, D]."""
    if len(shape) == 3:
        return InternalClassifier(shape[0], shape[-1], num_classes)
    if len(shape) == 2:
        return TokenHead(shape[-1], num_classes)
    if len(shape) == 1:
        return InternalClassifier(shape[0], None, num_classes)
    raise ValueError(f"no default exit head for outputs of shape {tuple(shape)}; pass head=")


def _main_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"an exit needs a module whose output is a tensor (or a tuple starting with one), "
                    f"got {type(out).__name__}")


class _Stop(Exception):
    """Ends a backbone's forward from a hook: every input of the batch has left."""


class AttachedExits(nn.Module):
    """A model plus one head per named module: `forward(x) -> [exit_1, ..., exit_k, final logits]`."""

    def __init__(self, net: nn.Module, at: Sequence[str], heads: Sequence[nn.Module]):
        super().__init__()
        if len(at) != len(heads):
            raise ValueError(f"{len(heads)} heads for {len(at)} exit points")
        self.net = net
        self.at = list(at)
        self.ics = nn.ModuleList(heads)
        modules = dict(net.named_modules())
        self._points = [modules[name] for name in self.at]

    @property
    def num_exits(self) -> int:
        return len(self.ics) + 1

    def _run(self, x: torch.Tensor, on_exit: Optional[Callable[[int, torch.Tensor], Optional[torch.Tensor]]]):
        """The backbone with the exit hooks on; `on_exit(i, logits)` may return a mask of rows to drop."""
        logits: List[torch.Tensor] = []

        def hook(i: int):
            def fn(module, inputs, out):
                feat = _main_tensor(out)
                z = self.ics[i](feat)
                logits.append(z)
                if on_exit is None:
                    return None
                leave = on_exit(i, z)
                if leave is None or not bool(leave.any()):
                    return None
                if bool(leave.all()):
                    raise _Stop
                keep = ~leave
                if isinstance(out, torch.Tensor):
                    return out[keep]
                return type(out)(select_rows(t, keep) if isinstance(t, torch.Tensor) else t for t in out)
            return fn

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self._points)]
        try:
            final = self.net(x)
        finally:
            for h in handles:
                h.remove()
        return logits, final

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        logits, final = self._run(x, None)
        if len(logits) != len(self.ics):
            raise RuntimeError(f"{len(logits)} of the {len(self.ics)} exit points ran in this forward; each named "
                               f"module must run exactly once per forward")
        return logits + [_main_tensor(final)]

    def forward_early(self, x: torch.Tensor,
                      on_exit: Callable[[int, torch.Tensor], Optional[torch.Tensor]]) -> Optional[torch.Tensor]:
        """Run until every input has left: `on_exit(i, logits)` returns the mask of the current rows that
        leave at exit i (dropped from the batch flowing on). Returns the final logits of the rows that
        reached the end, or None when the forward stopped early."""
        try:
            _, final = self._run(x, on_exit)
        except _Stop:
            return None
        return _main_tensor(final)

    def backbone(self) -> nn.Module:
        """The model the exits are attached to (its parameters are shared)."""
        return self.net

    def remove(self) -> nn.Module:
        """The original model, without exits (no hook is left on it)."""
        return self.net


@torch.no_grad()
def _output_shapes(net: nn.Module, at: Sequence[str], input_shape: Sequence[int]) -> List[Tuple[int, ...]]:
    modules = dict(net.named_modules())
    missing = [name for name in at if name not in modules]
    if missing:
        raise ValueError(f"no module named {', '.join(missing)} in the model (named modules: "
                         f"{', '.join(n for n in list(modules)[1:12])}, ...)")
    shapes: dict = {}   # in the order the modules ran

    def record(name: str):
        def hook(module, inputs, out) -> None:   # returns None: the output flows on unchanged
            shapes.setdefault(name, tuple(_main_tensor(out).shape[1:]))
        return hook

    handles = [modules[name].register_forward_hook(record(name)) for name in at]
    was = net.training
    net.eval()
    try:
        param = next(net.parameters())
        net(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        net.train(was)
        for h in handles:
            h.remove()
    if list(shapes) != list(at):
        raise ValueError(f"the exit points must each run once, listed in the order the forward runs them "
                         f"({', '.join(shapes) or 'none ran'}), got {', '.join(at)}")
    return [shapes[name] for name in at]


def attach_exits(net: nn.Module, at: Sequence[str], num_classes: int, input_shape: Sequence[int] = (3, 32, 32),
                 head: Optional[HeadFactory] = None, seed: Optional[int] = None) -> AttachedExits:
    """`net` (untouched; its parameters are shared) with an exit after each module named in `at`, in
    forward order. `head(shape, num_classes)` builds each head (default: `default_head`); `seed` makes
    the heads' initialisation reproducible without touching the global RNG state."""
    if not at:
        raise ValueError("at least one exit point (a module name) is needed")
    if len(set(at)) != len(at):
        raise ValueError(f"an exit point is named twice: {list(at)}")
    shapes = _output_shapes(net, at, input_shape)
    make = head or default_head
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        heads = [make(shape, num_classes) for shape in shapes]
    param = next(net.parameters())
    wrapped = AttachedExits(net, at, heads).to(param.device)
    wrapped.training = net.training   # the model's own mode (its modules keep theirs)
    for h in wrapped.ics:
        h.train(net.training)
    return wrapped


__all__ = ["attach_exits", "AttachedExits", "TokenHead", "default_head"]
