"""Latency of a multi-exit network partitioned between an IoT device and a server (docs/method.md §6).

The edge device runs the network up to exit s (the split: stem, the first s blocks and their
ICs). An input that exits there is answered on the device; any other input's split-point
activation is uploaded to a server, which runs the rest. For an input answered by exit i
(1-based, K = final):

    T(i) = t_dev(1..i)                                              if i <= s
    T(i) = t_dev(1..s) + bytes / B + RTT + t_srv(s+1..i)            otherwise

t_dev(1..i) is the device's cumulative compute time from the input through exit i and
t_srv(s+1..i) the server's compute from just after exit s through exit i. The expected
latency over a set of inputs is sum_i P(exit i) T(i) and the attack's amplification is
E[T | adversarial] / E[T | clean].

Compute times come either from the measured per-exit ops and a speed (`from_ops`), or from
wall-clock times measured on this machine with the early-exit runtime (`from_measured`:
this machine plays the device, the server is `server_speedup` times faster).

Defaults (documented choices, all overridable; they describe a Raspberry-Pi-class device
talking to a GPU server over a cellular / Wi-Fi uplink):

* device speed 4 GOPS (4e9 ops/s: effective throughput of a quad-core ARM edge CPU running
  PyTorch, which puts a CIFAR-10 ResNet-56 SDN at ~65 ms);
* server speed 1 TOPS (1e12 ops/s: effective batch-1 throughput of a datacentre GPU);
* split: the last IC whose normalised cumulative cost is <= 0.5 (the device holds about
  half the network);
* transmitted tensor: the block output at the split point, float32, its size taken from a
  dummy forward (for models without the stem/blocks layout: the uint8 input image);
* uplink bandwidth 10 Mbit/s; round-trip time 20 ms.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import DeepslothError
from ..models.sdn import state_tensors

from .latency_defaults import BANDWIDTH_MBPS, DEVICE_GOPS, RTT_MS, SERVER_GOPS, SPLIT_COST

DEFAULT_DEVICE_OPS_PER_S = DEVICE_GOPS * 1e9
DEFAULT_SERVER_OPS_PER_S = SERVER_GOPS * 1e9
DEFAULT_BANDWIDTH_BPS = BANDWIDTH_MBPS * 1e6
DEFAULT_RTT_S = RTT_MS / 1000
DEFAULT_SPLIT_COST = SPLIT_COST


def default_split(normalised_costs: Sequence[float], max_cost: float = DEFAULT_SPLIT_COST) -> int:
    """Number of exits on the device: the last IC with normalised cost <= `max_cost` (>= 1)."""
    ics = list(normalised_costs)[:-1]
    s = 0
    for i, c in enumerate(ics):
        if c <= max_cost + 1e-12:
            s = i + 1
    return max(1, s) if ics else 1


@torch.no_grad()
def split_tensor_bytes(model: nn.Module, input_shape: Sequence[int], split: int,
                       dtype_bytes: Optional[int] = None) -> int:
    """Bytes uploaded when the device holds exits 1..`split`: the output of block `split`
    (a MultiExitNet's stem + first `split` blocks, one dummy forward). For other models
    the input image (uint8, C*H*W bytes). 0 when the whole network is on the device."""
    from ..exits.runtime import supports_early_exit
    if supports_early_exit(model):
        k = len(model.ics) + 1
        if split >= k:
            return 0
        was_training = model.training
        model.eval()
        try:
            param = next(model.parameters())
            x = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
            if hasattr(model, "at"):   # attached exits: the backbone's output at exit point `split`
                modules = dict(model.net.named_modules())
                captured = []
                handle = modules[model.at[split - 1]].register_forward_hook(lambda m, i, o: captured.append(o))
                try:
                    model.net(x)
                finally:
                    handle.remove()
                h = captured[0]
            else:
                h = model.stem(x)
                for block in list(model.blocks)[:split]:
                    h = block(h)
        finally:
            model.train(was_training)
        return int(sum(t.numel() * (dtype_bytes or t.element_size()) for t in state_tensors(h)))
    return int(np.prod(list(input_shape)))


@dataclass
class LatencyModel:
    """Partitioned device/server latency. Times are cumulative per exit, in seconds."""

    device_times: List[float]          # t_dev(1..i), i = 1..K
    server_times: List[float]          # t_srv(1..i), i = 1..K (only differences are used)
    split: int                         # exits 1..split run on the device (1 <= split <= K)
    tx_bytes: int                      # uploaded per input that leaves the device
    bandwidth_bps: float = DEFAULT_BANDWIDTH_BPS
    rtt_s: float = DEFAULT_RTT_S
    source: str = "ops"                # "ops" or "measured"
    params: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.device_times)
        if k < 1 or len(self.server_times) != k:
            raise DeepslothError("device and server need one cumulative time per exit")
        if not 1 <= int(self.split) <= k:
            raise DeepslothError(f"split must be an exit number in 1..{k}, got {self.split}")
        if self.bandwidth_bps <= 0 or self.rtt_s < 0 or self.tx_bytes < 0:
            raise DeepslothError("bandwidth must be > 0, round-trip time and bytes >= 0")
        self.split = int(self.split)

    @property
    def num_exits(self) -> int:
        return len(self.device_times)

    @property
    def upload_s(self) -> float:
        return self.tx_bytes * 8.0 / self.bandwidth_bps

    # -------------------------------------------------------------- constructors

    @classmethod
    def from_ops(cls, ops: Sequence[float], *, device_ops_per_s: float = DEFAULT_DEVICE_OPS_PER_S,
                 server_ops_per_s: float = DEFAULT_SERVER_OPS_PER_S, split: Optional[int] = None,
                 tx_bytes: int = 0, bandwidth_bps: float = DEFAULT_BANDWIDTH_BPS,
                 rtt_s: float = DEFAULT_RTT_S) -> "LatencyModel":
        """Compute times = cumulative ops / speed (ops of every exit, e.g. `ExitCosts.ops`)."""
        if device_ops_per_s <= 0 or server_ops_per_s <= 0:
            raise DeepslothError("device and server speeds must be > 0")
        ops = [float(o) for o in ops]
        if split is None:
            split = default_split([o / ops[-1] for o in ops])
        return cls([o / device_ops_per_s for o in ops], [o / server_ops_per_s for o in ops], split,
                   int(tx_bytes), bandwidth_bps, rtt_s, "ops",
                   {"device_ops_per_s": device_ops_per_s, "server_ops_per_s": server_ops_per_s})

    @classmethod
    def from_measured(cls, cumulative_seconds: Sequence[float], *, server_speedup: float = (
            DEFAULT_SERVER_OPS_PER_S / DEFAULT_DEVICE_OPS_PER_S), split: Optional[int] = None,
            normalised_costs: Optional[Sequence[float]] = None, tx_bytes: int = 0,
            bandwidth_bps: float = DEFAULT_BANDWIDTH_BPS, rtt_s: float = DEFAULT_RTT_S) -> "LatencyModel":
        """Device times measured on this machine (`measure_exit_times`); the server runs the
        same work `server_speedup` times faster."""
        if server_speedup <= 0:
            raise DeepslothError("server speed-up must be > 0")
        t = [float(s) for s in cumulative_seconds]
        if split is None:
            split = default_split(normalised_costs if normalised_costs is not None else [s / t[-1] for s in t])
        return cls(t, [s / server_speedup for s in t], split, int(tx_bytes), bandwidth_bps, rtt_s,
                   "measured", {"server_speedup": server_speedup})

    # -------------------------------------------------------------- latency

    def exit_latency(self) -> List[float]:
        """T(i) for every exit i = 1..K (list index i-1)."""
        s = self.split
        dev, srv = self.device_times, self.server_times
        offload = dev[s - 1] + self.upload_s + self.rtt_s
        return [dev[i] if i < s else offload + (srv[i] - srv[s - 1]) for i in range(self.num_exits)]

    def expected_latency(self, exit_counts: Sequence[float]) -> float:
        """sum_i P(exit i) T(i) for an exit histogram (length K)."""
        n = np.asarray(exit_counts, dtype=np.float64)
        if n.shape != (self.num_exits,):
            raise DeepslothError(f"exit histogram has {n.shape[0] if n.ndim else 0} entries, "
                                 f"the model {self.num_exits} exits")
        if n.sum() <= 0:
            raise DeepslothError("expected latency needs at least one input")
        return float((n / n.sum()) @ np.asarray(self.exit_latency()))

    def amplification(self, clean_counts: Sequence[float], adversarial_counts: Sequence[float]) -> float:
        """E[T | adversarial] / E[T | clean]."""
        return self.expected_latency(adversarial_counts) / self.expected_latency(clean_counts)

    def offload_fraction(self, exit_counts: Sequence[float]) -> float:
        """Fraction of inputs sent to the server."""
        n = np.asarray(exit_counts, dtype=np.float64)
        return float(n[self.split:].sum() / n.sum())

    def worst_case_counts(self) -> List[int]:
        """The histogram of a complete slowdown: every input answered by the final exit."""
        return [0] * (self.num_exits - 1) + [1]

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["upload_s"] = self.upload_s
        d["exit_latency"] = self.exit_latency()
        return d


__all__ = ["LatencyModel", "default_split", "split_tensor_bytes", "DEFAULT_DEVICE_OPS_PER_S",
           "DEFAULT_SERVER_OPS_PER_S", "DEFAULT_BANDWIDTH_BPS", "DEFAULT_RTT_S", "DEFAULT_SPLIT_COST"]
