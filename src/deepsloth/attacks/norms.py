"""Every norm-dependent piece of the attacks, in one place.

Perturbations are batched: a tensor [N, ...] holds one perturbation per row (a universal
perturbation is a batch of one). Norms are measured per row over all remaining dimensions.

* `lp_norm`, `norm_report`: measure perturbations (always against the *clean* input).
* `project`: Euclidean projection of each row onto the l_inf / l_2 / l_1 ball of radius eps
  (the l_1 projection is the exact sorting-based one of Duchi et al., 2008).
* `clip_to_ball`: the final step of every per-sample attack: project `x_adv - x` onto the
  ball centred on the clean `x`, then clamp to [0, 1]. Clamping moves each coordinate of the
  perturbation towards zero, so it never leaves the ball.
* `random_in_ball`: uniform random starts, drawn from a caller's `torch.Generator`.
* `steepest_direction`: the normalised ascent direction of a gradient under each norm
  (sign, unit l_2 vector, sparse sign for l_1).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Union

import torch

NORMS = ("linf", "l2", "l1")
_ALIASES = {"inf": "linf", "li": "linf", "l_inf": "linf", "linfinity": "linf",
            "2": "l2", "l_2": "l2", "1": "l1", "l_1": "l1"}

Radius = Union[float, torch.Tensor]


def check_norm(norm: str) -> str:
    """Canonical norm name ('linf', 'l2' or 'l1'); raises ValueError otherwise."""
    key = str(norm).lower()
    key = _ALIASES.get(key, key)
    if key not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")
    return key


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _radius(eps: Radius, like: torch.Tensor) -> torch.Tensor:
    """eps as a [N, 1] tensor broadcastable against the flattened rows of `like`."""
    if isinstance(eps, torch.Tensor):
        return eps.to(like.device, like.dtype).reshape(-1, 1)
    return torch.full((1, 1), float(eps), device=like.device, dtype=like.dtype)


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row norm [N] of a batch of perturbations."""
    norm = check_norm(norm)
    flat = _rows(delta)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    return flat.abs().sum(dim=1)


def norm_report(x_adv: torch.Tensor, x: torch.Tensor) -> Dict[str, Dict[str, float]]:
    """Achieved norms of `x_adv - x` (clean `x`): {'linf': {'max','mean'}, 'l2': ..., 'l1': ...}.

    Computed in float64 so the reported numbers are not rounding artefacts; one host sync.
    """
    delta = x_adv.detach().double() - x.detach().double()
    if delta.shape[0] == 0:
        return {n: {"max": 0.0, "mean": 0.0} for n in NORMS}
    stats = torch.stack([torch.stack([lp_norm(delta, n).max(), lp_norm(delta, n).mean()])
                         for n in NORMS]).cpu().tolist()
    return {n: {"max": s[0], "mean": s[1]} for n, s in zip(NORMS, stats)}


def project_linf(delta: torch.Tensor, eps: Radius) -> torch.Tensor:
    if isinstance(eps, torch.Tensor):
        r = eps.to(delta.device, delta.dtype).reshape(-1, *([1] * (delta.dim() - 1)))
        return torch.maximum(torch.minimum(delta, r), -r)
    return delta.clamp(-float(eps), float(eps))


def project_l2(delta: torch.Tensor, eps: Radius) -> torch.Tensor:
    flat = _rows(delta)
    norms = flat.norm(p=2, dim=1, keepdim=True)
    factor = torch.clamp(_radius(eps, flat) / norms.clamp_min(1e-12), max=1.0)
    return (flat * factor).reshape(delta.shape)


def project_l1(delta: torch.Tensor, eps: Radius) -> torch.Tensor:
    """Exact Euclidean projection of each row onto {d : ||d||_1 <= eps}.

    Rows already inside the ball are returned unchanged. For the others, soft-threshold
    |d| at theta, where theta comes from the sorted magnitudes (simplex projection).
    The threshold is computed in float64 so the projected norm is eps to ~1e-12 relative.
    """
    flat = _rows(delta)
    d = flat.shape[1]
    radius = _radius(eps, flat).double()
    mag = flat.abs().double()
    inside = mag.sum(dim=1, keepdim=True) <= radius
    srt = mag.sort(dim=1, descending=True).values
    cssv = srt.cumsum(dim=1) - radius                        # [N, d]
    j = torch.arange(1, d + 1, device=flat.device, dtype=torch.float64)
    cond = srt - cssv / j > 0
    rho = cond.to(torch.int64).cumsum(dim=1).argmax(dim=1, keepdim=True)  # last True (0-based)
    theta = (cssv.gather(1, rho) / (rho + 1).double()).clamp_min(0)
    projected = (flat.sign() * (mag - theta).clamp_min(0).to(flat.dtype))
    return torch.where(inside, flat, projected).reshape(delta.shape)


def project(delta: torch.Tensor, norm: str, eps: Radius) -> torch.Tensor:
    """Project each row of `delta` onto the `norm` ball of radius `eps` (float or [N] tensor)."""
    norm = check_norm(norm)
    if norm == "linf":
        return project_linf(delta, eps)
    if norm == "l2":
        return project_l2(delta, eps)
    return project_l1(delta, eps)


def clip_to_ball(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: Radius) -> torch.Tensor:
    """x + project(x_adv - x), clamped to [0, 1]: inside the ball around the CLEAN input x."""
    return (x + project(x_adv - x, norm, eps)).clamp_(0.0, 1.0)


def random_in_ball(shape, norm: str, eps: float, generator: Optional[torch.Generator] = None,
                   device=None, dtype=torch.float32) -> torch.Tensor:
    """Draws uniform in the ball, one per row, from `generator` (on the CPU, then moved).

    Drawing on the CPU makes random starts identical across devices for a given seed.
    l_inf: uniform in the cube; l_2: Gaussian direction, radius eps * U^(1/d); l_1: the
    exponential trick (d+1 i.i.d. Exp(1) variables, normalised, random signs).
    """
    norm = check_norm(norm)
    shape = tuple(shape)
    n, d = shape[0], int(math.prod(shape[1:]))
    if norm == "linf":
        out = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * eps
    elif norm == "l2":
        g = torch.randn((n, d), generator=generator, dtype=torch.float64)
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        r = torch.rand((n, 1), generator=generator, dtype=torch.float64) ** (1.0 / d)
        out = (g * r * eps).reshape(shape)
    else:
        e = -torch.rand((n, d + 1), generator=generator, dtype=torch.float64).clamp_min(1e-300).log()
        mag = e[:, :d] / e.sum(dim=1, keepdim=True)
        sign = torch.randint(0, 2, (n, d), generator=generator, dtype=torch.float64) * 2 - 1
        out = (mag * sign * eps).reshape(shape)
    # the float32 cast can round a coordinate up by half an ulp; re-project in the target type
    return project(out.to(dtype), norm, eps).to(device) if device is not None else project(out.to(dtype), norm, eps)


def sparse_sign(grad: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """l_1 steepest direction: sign(grad) on the coordinates whose |grad| is at or above the
    per-row `percentile` (numpy's linear interpolation), divided by their count, so each row
    has l_1 norm 1 (or 0 for a zero gradient)."""
    flat = _rows(grad)
    mag = flat.abs()
    d = flat.shape[1]
    pos = (percentile / 100.0) * (d - 1)
    lo = int(math.floor(pos))
    frac = pos - lo
    m = d - lo                                    # the sorted values at ranks lo..d-1
    top = mag.topk(m, dim=1, largest=True, sorted=True).values
    v_lo = top[:, -1:]
    v_hi = top[:, -2:-1] if m > 1 else v_lo
    thr = v_lo + frac * (v_hi - v_lo)
    mask = (mag >= thr) & (mag > 0)
    count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(flat.dtype)
    return (flat.sign() * mask / count).reshape(grad.shape)


def steepest_direction(grad: torch.Tensor, norm: str, percentile: float = 99.0) -> torch.Tensor:
    """Unit-norm direction of steepest ascent for `grad` under `norm` (per row)."""
    norm = check_norm(norm)
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        flat = _rows(grad)
        return (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).reshape(grad.shape)
    return sparse_sign(grad, percentile)


def clip_grad_l2(grad: torch.Tensor, max_norm: float = 1.0) -> torch.Tensor:
    """Scale each row so its l_2 norm is at most `max_norm`."""
    flat = _rows(grad)
    factor = torch.clamp(max_norm / flat.norm(dim=1, keepdim=True).clamp_min(1e-12), max=1.0)
    return (flat * factor).reshape(grad.shape)


__all__ = ["NORMS", "check_norm", "lp_norm", "norm_report", "project", "project_linf",
           "project_l2", "project_l1", "clip_to_ball", "random_in_ball",
           "sparse_sign", "steepest_direction", "clip_grad_l2"]
