"""A real early-exit runtime: computation stops at the first exit that fires.

`EarlyExitRunner` exists to measure wall-clock latency; metrics come from the batched
all-exit forward (`collect_exit_outputs`), and the two agree exactly on the exit index and
prediction of every input (same float32 softmax, same comparison; see below).

How it runs:

* `MultiExitNet` (anything whose forward is `MultiExitNet.forward`: stem -> blocks, an IC
  after every block, head): the runner walks stem, block 1, IC 1, block 2, IC 2, ... and
  stops as soon as the policy fires. With batch size 1 this is the deployment setting.
  With a larger batch, inputs whose exit fired are answered and dropped from the batch, and
  the rest continue with a smaller batch.
* A model with exits attached by `attach_exits` (`deepsloth.models.attach`): the backbone runs
  with hooks at its exit points; inputs whose exit fired are dropped from the batch flowing on,
  and the forward ends when none is left.
* Any other multi-exit model (only `forward(x) -> list of exit logits` is known): the runner
  cannot stop inside an opaque forward, so it runs the full forward and applies the policy
  to all exits. Predictions and exit indices are still right; wall-clock times then are
  full-network times (`RuntimeResult.early_exit` is False).

Per-input wall-clock: batch size 1, the time from the input entering the network to its
answer; batched, the time from the batch entering the network to the moment that input's
exit fired (on CUDA the device is synchronised before every clock reading).

Numerics: the exit decision is made from `exit_stats` (the same float32 log-softmax as the
batched forward) with the same comparison (`max softmax >= q` for the default policy).
A convolution on a batch of one can still differ from the batched one in the last bit of a
logit, which flips a decision only when the confidence sits within ~1e-6 of the threshold;
`compare_with_batched` reports any disagreement together with that distance.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ..models.fold import fold_batchnorm
from ..models.attach import AttachedExits
from ..models.sdn import MultiExitNet, select_rows
from ..progress import progress
from .forward import ExitOutputs, as_exit_list, to_float01
from .policies import ExitPolicy, check_threshold, exit_stats, make_policy


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def supports_early_exit(model: nn.Module) -> bool:
    """True for models the runner can stop early: the `MultiExitNet` layout and forward, or a model
    with exits attached by `attach_exits`."""
    if isinstance(model, AttachedExits):
        return type(model).forward is AttachedExits.forward
    return (isinstance(model, MultiExitNet) and type(model).forward is MultiExitNet.forward
            and len(model.ics) == len(model.blocks))


@dataclass
class RuntimeResult:
    """Per input: prediction, 0-based exit index, max softmax at that exit, wall-clock seconds.

    The prediction is the policy's answer at the exit (`ExitPolicy.answer`): the exit's own
    prediction, except under a policy that answers from an earlier exit (an exit cap)."""

    prediction: torch.Tensor   # int64 [N]
    exit_index: torch.Tensor   # int64 [N]
    confidence: torch.Tensor   # float32 [N]
    seconds: torch.Tensor      # float64 [N]
    batch_size: int
    early_exit: bool           # False when the model forced the full-forward fallback
    total_seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.prediction.shape[0])

    @property
    def mean_seconds(self) -> float:
        return float(self.seconds.mean()) if len(self) else 0.0

    def exit_counts(self, num_exits: int) -> List[int]:
        return torch.bincount(self.exit_index, minlength=num_exits).tolist()


class _Answers:
    """The exit decisions of one batch: which inputs leave at each exit, recorded as they leave."""

    def __init__(self, runner: "EarlyExitRunner", out: Dict[str, torch.Tensor], rows: torch.Tensor):
        self.runner, self.out, self.alive = runner, out, rows
        self.t0 = time.perf_counter()
        self.hist: List[List[torch.Tensor]] = [[], [], []]   # confidence, prediction, entropy per exit so far
        self.done = False

    def _record(self, leaving: torch.Tensor, k: torch.Tensor, c: torch.Tensor, exit_index: int) -> None:
        _sync(self.runner.device)
        dt = time.perf_counter() - self.t0
        self.out["prediction"][leaving] = k.cpu()
        self.out["exit_index"][leaving] = exit_index
        self.out["confidence"][leaving] = c.float().cpu()
        self.out["seconds"][leaving] = dt

    def at_exit(self, i: int, logits: torch.Tensor) -> Optional[torch.Tensor]:
        """Exit i's logits for the inputs still running: the mask of those that leave (None: none)."""
        c, k, e = exit_stats(logits)
        for h, t in zip(self.hist, (c, k, e)):
            h.append(t)
        policy, q = self.runner.policy, self.runner.threshold
        fire = policy.fire_last(*self.hist, q)
        if int(fire.sum()) == 0:   # the host must know who left: inherent to early exit
            return None
        self._record(self.alive[fire.cpu()], policy.answer(*self.hist, q)[fire], c[fire], i)
        if bool(fire.all()):
            self.done = True
            return fire
        keep = ~fire
        self.alive = self.alive[keep.cpu()]
        self.hist = [[t[keep] for t in h] for h in self.hist]
        return fire

    def at_final(self, logits: torch.Tensor, exit_index: int) -> None:
        c, k, e = exit_stats(logits)
        for h, t in zip(self.hist, (c, k, e)):
            h.append(t)
        self._record(self.alive, self.runner.policy.answer(*self.hist, self.runner.threshold, final=True),
                     c, exit_index)
        self.done = True


class EarlyExitRunner:
    """Run a multi-exit model with true early exit.

        runner = EarlyExitRunner(model, threshold=0.8)          # confidence policy
        res = runner.run(images, batch_size=1)                  # uint8 or float [N,3,H,W]
        res.prediction, res.exit_index, res.seconds
    """

    def __init__(self, model: nn.Module, threshold: float, policy: Optional[str | ExitPolicy] = "confidence",
                 device: Optional[torch.device | str] = None, num_classes: Optional[int] = None,
                 fold_bn: bool = True):
        # the same BN-folded network the batched evaluation runs (collect_exit_outputs), so the
        # two agree; fold_bn=False runs the model as given
        self.model = fold_batchnorm(model) if fold_bn else model
        self.policy = make_policy(policy, num_classes)
        self.threshold = check_threshold(self.policy, threshold)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.early_exit = supports_early_exit(model)

    # ------------------------------------------------------------------ one batch

    def _batch_early(self, x: torch.Tensor, out: Dict[str, torch.Tensor], rows: torch.Tensor) -> None:
        """Run exit by exit, answering and dropping inputs as their exit fires: a `MultiExitNet` is walked
        stem/blocks/ICs; a model with attached exits runs its backbone with hooks that drop them."""
        m = self.model
        answer = _Answers(self, out, rows)
        if isinstance(m, AttachedExits):
            final = m.forward_early(x, answer.at_exit)
            if final is not None:
                answer.at_final(final, len(m.ics))
            return
        h = m.stem(x)
        for i, (block, ic) in enumerate(zip(m.blocks, m.ics)):
            h = block(h)
            leave = answer.at_exit(i, ic(h))
            if answer.done:
                return
            if leave is not None:
                h = select_rows(h, ~leave)
        answer.at_final(m.head(h), len(m.ics))

    def _batch_full(self, x: torch.Tensor, out: Dict[str, torch.Tensor], rows: torch.Tensor) -> None:
        """Fallback for opaque models: full forward, then the policy over all exits."""
        t0 = time.perf_counter()
        conf, pred, ent = exit_stats(torch.stack(as_exit_list(self.model(x))))
        if conf.shape[0] > 1:
            idx, answer = self.policy.exit_predictions(ExitOutputs(conf, pred, ent), self.threshold)
        else:
            idx, answer = torch.zeros(conf.shape[1], dtype=torch.long, device=conf.device), pred[0]
        _sync(self.device)
        dt = time.perf_counter() - t0
        sel = idx.unsqueeze(0)
        out["prediction"][rows] = answer.cpu()
        out["exit_index"][rows] = idx.cpu()
        out["confidence"][rows] = conf.gather(0, sel).squeeze(0).float().cpu()
        out["seconds"][rows] = dt

    # ------------------------------------------------------------------ public

    @torch.inference_mode()
    def run(self, images: torch.Tensor, batch_size: int = 1, warmup: int = 1,
            desc: str = "early-exit runtime") -> RuntimeResult:
        """Answer every input of `images` (uint8 or float in [0, 1], [N,3,H,W]).

        `warmup` batches are run once untimed first (allocator and kernel set-up), then the
        timed pass answers every input.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n = int(images.shape[0])
        out = {"prediction": torch.zeros(n, dtype=torch.long), "exit_index": torch.zeros(n, dtype=torch.long),
               "confidence": torch.zeros(n, dtype=torch.float32), "seconds": torch.zeros(n, dtype=torch.float64)}
        step = self._batch_early if self.early_exit else self._batch_full
        was_training = self.model.training
        self.model.eval()
        try:
            scratch = {k: v.clone() for k, v in out.items()}
            for w in range(min(warmup, (n + batch_size - 1) // batch_size)):
                rows = torch.arange(w * batch_size, min(n, (w + 1) * batch_size))
                step(to_float01(images[rows].to(self.device)), scratch, rows)
            t_start = time.perf_counter()
            for start in progress(range(0, n, batch_size), desc=desc, total=(n + batch_size - 1) // batch_size,
                                  unit="batch" if batch_size > 1 else "img"):
                rows = torch.arange(start, min(n, start + batch_size))
                x = to_float01(images[start:start + batch_size].to(self.device, non_blocking=True))
                step(x, out, rows)
            total = time.perf_counter() - t_start
        finally:
            self.model.train(was_training)
        return RuntimeResult(out["prediction"], out["exit_index"], out["confidence"], out["seconds"],
                             batch_size=batch_size, early_exit=self.early_exit, total_seconds=total)


# ----------------------------------------------------------------------------- helpers

@torch.inference_mode()
def measure_exit_times(model: nn.Module, images: torch.Tensor, device: Optional[torch.device | str] = None,
                       costs: Optional[Sequence[float]] = None, warmup: int = 2,
                       desc: str = "timing exits") -> Dict[str, object]:
    """Cumulative wall-clock seconds from the input to each exit at batch size 1, averaged
    over `images` (every exit is computed: nothing stops early).

    For a `MultiExitNet` the clock is read after each IC's decision statistics; for other
    models only the full forward can be timed, and it is spread over the exits in
    proportion to their normalised `costs` (required then). Returns
    {"cumulative_seconds": [K floats], "method": "measured" | "scaled-by-ops", "n": N}.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = int(images.shape[0])
    if n < 1:
        raise ValueError("need at least one image to time")
    early = supports_early_exit(model)
    if not early and costs is None:
        raise ValueError("timing exits of a model without the MultiExitNet layout needs its exit costs")

    def one(x: torch.Tensor) -> List[float]:
        t0 = time.perf_counter()
        if not early:
            exit_stats(torch.stack(as_exit_list(model(x))))
            _sync(device)
            return [time.perf_counter() - t0]
        stamps = []
        if isinstance(model, AttachedExits):
            def on_exit(i, z):
                c, _, _ = exit_stats(z)
                bool(c[0] >= 2.0)
                stamps.append(time.perf_counter() - t0)
            exit_stats(model.forward_early(x, on_exit))
            _sync(device)
            stamps.append(time.perf_counter() - t0)
            return stamps
        h = model.stem(x)
        for block, ic in zip(model.blocks, model.ics):
            h = block(h)
            c, _, _ = exit_stats(ic(h))
            bool(c[0] >= 2.0)  # the host reads the decision, as the runtime does
            stamps.append(time.perf_counter() - t0)
        exit_stats(model.head(h))
        _sync(device)
        stamps.append(time.perf_counter() - t0)
        return stamps

    try:
        for i in range(min(warmup, n)):
            one(to_float01(images[i:i + 1].to(device)))
        rows = [one(to_float01(images[i:i + 1].to(device))) for i in progress(range(n), desc=desc, unit="img")]
    finally:
        model.train(was_training)
    mean = torch.tensor(rows, dtype=torch.float64).mean(dim=0).tolist()
    if early:
        return {"cumulative_seconds": mean, "method": "measured", "n": n}
    return {"cumulative_seconds": [mean[0] * float(c) for c in costs], "method": "scaled-by-ops", "n": n}


def compare_with_batched(result: RuntimeResult, outputs: ExitOutputs, threshold: float,
                         policy: Optional[str | ExitPolicy] = None, tie_tolerance: float = 1e-5) -> Dict[str, object]:
    """Agreement of a runtime result with the batched evaluation of the same inputs.

    Returns counts of inputs whose exit index or prediction differ, and how many of those
    are near-threshold ties: some exit up to the later of the two decisions had a batched
    confidence within `tie_tolerance` of the threshold (confidence policy), where a
    last-bit difference between a batch-1 and a batched convolution can flip the decision.
    """
    policy = make_policy(policy)
    idx, pred = policy.exit_predictions(outputs, threshold)
    differ = (idx != result.exit_index) | (pred != result.prediction)
    bad = differ.nonzero().flatten()
    ties = 0
    for j in bad.tolist():
        last = int(max(idx[j], result.exit_index[j])) + 1
        if (outputs.confidence[:last, j] - threshold).abs().min() < tie_tolerance:
            ties += 1
    return {"n": len(idx), "exit_mismatch": int((idx != result.exit_index).sum()),
            "prediction_mismatch": int((pred != result.prediction).sum()),
            "mismatch": int(differ.sum()), "near_threshold_ties": ties,
            "unexplained": int(differ.sum()) - ties, "mismatch_indices": bad.tolist()}


__all__ = ["EarlyExitRunner", "RuntimeResult", "measure_exit_times", "compare_with_batched",
           "supports_early_exit"]
