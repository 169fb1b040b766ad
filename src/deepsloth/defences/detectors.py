"""Slowdown detectors: flag inputs (or streams of inputs) that look like a DeepSloth attack.

A DeepSloth perturbation pushes every internal classifier (IC) of a multi-exit network towards
the uniform distribution, so attacked inputs leave traces a defender can look for:

* `ExitStatsDetector` ("exit-stats") looks only at what an early-exit deployment computes
  anyway: the max softmax and the normalised entropy H(p)/log(C) of every IC of one input, fed
  to a logistic regression fitted on clean and attacked examples.
* `InputDetector` ("input") is a learned binary detector on the input image, a small CNN in the
  spirit of published slowdown detectors.
* `StreamMonitor` watches the exit indices of a stream of inputs and raises an alarm when, over a
  sliding window, too many inputs reach a late exit.

Both per-input detectors give a real-valued score per input: higher means "more likely attacked",
and the score is differentiable (with respect to the exit logits for `ExitStatsDetector`, to the
images for `InputDetector`), so an adaptive attacker can add it to the DeepSloth loss. A score is
turned into a decision by a threshold calibrated on clean scores for a chosen false-positive rate
(`calibrate`, then `flag`, `detection_rate`, `false_positive_rate`).

Threshold rule (`calibrate`): with n clean scores and a target rate `fpr`, let k = floor(fpr * n);
the threshold is the (k+1)-th largest clean score and an input is flagged when its score is
*strictly* above the threshold. At most k clean scores are strictly above it, so the
false-positive rate on the calibration scores is <= fpr; clean scores tied with the threshold
are not flagged (with many ties the measured rate can be well below fpr). On fresh clean inputs
the expected rate is about (k+1)/(n+1).

Detectors and monitors are saved to a directory as `detector.json` (settings, thresholds) and
`detector.safetensors` (tensors); nothing is pickled. `load_detector(dir)` reads any of them.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..data.augment import to_float01
from ..errors import DeepslothError
from ..exits.policies import exit_stats
from ..io import load_tensors, read_json, save_tensors, write_json

EXIT_STATS = ("confidence", "entropy")
SHARE_GRID: Tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))
_FORMAT = 1
_JSON = "detector.json"
_TENSORS = "detector.safetensors"


# ---------------------------------------------------------------- helpers

def _check_fpr(fpr, name: str = "fpr") -> float:
    try:
        value = float(fpr)
    except (TypeError, ValueError):
        raise DeepslothError(f"{name} must be a number in (0, 1), got {fpr!r}") from None
    if not 0.0 < value < 1.0:
        raise DeepslothError(f"{name} must be in (0, 1), got {fpr!r}")
    return value


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or int(value) < minimum:
        raise DeepslothError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _scores_1d(scores, name: str) -> torch.Tensor:
    t = torch.as_tensor(scores.detach() if isinstance(scores, torch.Tensor) else scores)
    if t.dim() != 1 or t.numel() == 0:
        raise DeepslothError(f"{name} must be a non-empty 1-D sequence of scores, got shape {tuple(t.shape)}")
    t = t.double().cpu()
    if not torch.isfinite(t).all():
        raise DeepslothError(f"{name} holds non-finite scores")
    return t


def _key(fpr: float) -> float:
    return round(float(fpr), 12)


def upper_quantile_threshold(values: torch.Tensor, rate: float) -> float:
    """The threshold of the module's tie rule: the (floor(rate * n) + 1)-th largest value, so
    that at most a `rate` share of `values` is strictly above it."""
    v = torch.sort(values.double().flatten(), descending=True).values
    k = min(int(math.floor(rate * v.numel() + 1e-9)), v.numel() - 1)
    return float(v[k])


def _exit_indices(idx, name: str, num_exits: Optional[int] = None) -> torch.Tensor:
    t = torch.as_tensor(idx.detach() if isinstance(idx, torch.Tensor) else idx)
    if t.dim() != 1 or t.numel() == 0:
        raise DeepslothError(f"{name} must be a non-empty 1-D sequence of exit indices, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise DeepslothError(f"{name} must hold integer exit indices")
    t = t.long().cpu()
    if int(t.min()) < 0 or (num_exits is not None and int(t.max()) >= num_exits):
        hi = "" if num_exits is None else f" and < {num_exits} (num_exits)"
        raise DeepslothError(f"{name} must hold exit indices >= 0{hi}, got range "
                             f"{int(t.min())}..{int(t.max())}")
    return t


# ---------------------------------------------------------------- per-input detectors

class Detector:
    """What both per-input detectors share: thresholds, decisions, rates, saving and loading.

    Subclasses implement `score`, `_settings`, `_state` / `_set_state` and set `name`."""

    name = "detector"

    def __init__(self):
        self.thresholds: Dict[float, float] = {}
        self.fitted = False

    # -- decisions
    def calibrate(self, clean_scores, fpr: float) -> float:
        """The threshold for false-positive rate `fpr` from clean scores (see the module's tie
        rule), stored in `self.thresholds[fpr]` and returned."""
        fpr = _check_fpr(fpr)
        s = _scores_1d(clean_scores, "clean_scores")
        thr = upper_quantile_threshold(s, fpr)
        self.thresholds[_key(fpr)] = thr
        return thr

    def threshold(self, fpr: float) -> float:
        fpr = _check_fpr(fpr)
        try:
            return self.thresholds[_key(fpr)]
        except KeyError:
            known = ", ".join(f"{k:g}" for k in sorted(self.thresholds)) or "none"
            raise DeepslothError(f"fpr {fpr:g} has no calibrated threshold (calibrated: {known}); "
                                 f"call calibrate(clean_scores, {fpr:g}) first") from None

    def flag(self, scores, fpr: float) -> torch.Tensor:
        """bool [N]: score strictly above the threshold calibrated for `fpr`."""
        thr = self.threshold(fpr)
        return _scores_1d(scores, "scores") > thr

    def detection_rate(self, attacked_scores, fpr: float) -> float:
        """Share of attacked inputs flagged at the threshold for `fpr`."""
        thr = self.threshold(fpr)
        return float((_scores_1d(attacked_scores, "attacked_scores") > thr).double().mean())

    def false_positive_rate(self, clean_scores, fpr: float) -> float:
        """Share of clean inputs flagged at the threshold for `fpr` (use held-out clean inputs)."""
        thr = self.threshold(fpr)
        return float((_scores_1d(clean_scores, "clean_scores") > thr).double().mean())

    # -- description and files
    def _settings(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _state(self) -> Dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_state(self, tensors: Dict[str, torch.Tensor], info: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    def _info(self) -> dict:
        """Facts about the fit saved beside the settings (not constructor arguments)."""
        return {}

    def _require_fit(self) -> None:
        if not self.fitted:
            raise DeepslothError(f"the {self.name} detector is not fitted; call fit(...) or load(...) first")

    def describe(self) -> dict:
        return {"name": self.name, **self._settings(), "fitted": self.fitted, **self._info(),
                "thresholds": {f"{k:g}": v for k, v in sorted(self.thresholds.items())}}

    def save(self, directory) -> Path:
        """Write `detector.json` and `detector.safetensors` into `directory`; returns it."""
        self._require_fit()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(directory / _TENSORS, self._state())
        write_json(directory / _JSON, {
            "format": _FORMAT, "name": self.name, "settings": self._settings(), "info": self._info(),
            "thresholds": [[k, v] for k, v in sorted(self.thresholds.items())]})
        return directory

    @classmethod
    def load(cls, directory):
        """A detector saved by `save` (its class must match)."""
        obj = load_detector(directory)
        if not isinstance(obj, cls):
            raise DeepslothError(f"{directory} holds a {obj.name!r} detector, not {cls.name!r}")
        return obj

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({args})"


def _as_logits_list(logits_list, name: str = "logits_list") -> List[torch.Tensor]:
    if isinstance(logits_list, torch.Tensor):
        if logits_list.dim() != 3:
            raise DeepslothError(f"{name} must be K tensors [N, C] or one tensor [K, N, C], got shape "
                                 f"{tuple(logits_list.shape)}")
        items = list(logits_list.unbind(0))
    else:
        items = list(logits_list)
    if len(items) < 2:
        raise DeepslothError(f"{name} must hold at least 2 exits (an internal classifier and the final), "
                             f"got {len(items)}")
    shape = tuple(items[0].shape) if isinstance(items[0], torch.Tensor) else None
    for t in items:
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise DeepslothError(f"{name} must hold tensors [N, C] of one shape, got {shape} and {got}")
    if shape[1] < 2 or shape[0] == 0:
        raise DeepslothError(f"{name} must hold at least one input and 2 classes, got [N, C] = {list(shape)}")
    return items


class ExitStatsDetector(Detector):
    """Logistic regression on the exit statistics of one input.

    Features, per internal classifier (every exit but the final), in exit order: for each of
    `stats` the max softmax ("confidence") and/or the normalised entropy H(p)/log(C)
    ("entropy"), computed as the exit policies compute them. `fit` standardises the features
    with the clean set's mean and standard deviation and fits a class-balanced logistic
    regression (clean 0, attacked 1); `score` is the logit of "attacked".
    """

    name = "exit-stats"

    def __init__(self, stats: Sequence[str] = EXIT_STATS, l2: float = 1e-3):
        super().__init__()
        if isinstance(stats, str):
            stats = (stats,)
        stats = tuple(str(s).lower() for s in stats)
        bad = [s for s in stats if s not in EXIT_STATS]
        if not stats or bad or len(set(stats)) != len(stats):
            raise DeepslothError(f"stats must be distinct names from {', '.join(EXIT_STATS)}, got {list(stats)}")
        if not (isinstance(l2, (int, float)) and math.isfinite(l2) and l2 >= 0):
            raise DeepslothError(f"l2 must be a finite number >= 0, got {l2!r}")
        self.stats = stats
        self.l2 = float(l2)
        self.num_exits: Optional[int] = None
        self.num_classes: Optional[int] = None
        self.mean = self.std = self.weight = self.bias = None
        self.train_accuracy: Optional[float] = None

    @property
    def num_features(self) -> Optional[int]:
        return None if self.num_exits is None else (self.num_exits - 1) * len(self.stats)

    def features(self, logits_list) -> torch.Tensor:
        """Float32 [N, (K-1) * len(stats)] from K exit logits [N, C] (differentiable)."""
        items = _as_logits_list(logits_list)
        log_c = math.log(items[0].shape[1])
        cols = []
        for logits in items[:-1]:
            conf, _, ent = exit_stats(logits)
            for s in self.stats:
                cols.append(conf if s == "confidence" else ent / log_c)
        return torch.stack(cols, dim=1)

    def features_from_outputs(self, outputs) -> torch.Tensor:
        """The same features from `ExitOutputs` (no gradient: they hold no logits)."""
        self._require_fit()
        if outputs.num_exits != self.num_exits:
            raise DeepslothError(f"outputs has {outputs.num_exits} exits, the detector was fitted on {self.num_exits}")
        log_c = math.log(self.num_classes)
        cols = []
        for i in range(self.num_exits - 1):
            for s in self.stats:
                cols.append(outputs.confidence[i].float() if s == "confidence"
                            else outputs.entropy[i].float() / log_c)
        return torch.stack(cols, dim=1)

    def _check_shape(self, items: List[torch.Tensor], name: str) -> None:
        k, c = len(items), items[0].shape[1]
        if (k, c) != (self.num_exits, self.num_classes):
            raise DeepslothError(f"{name} has {k} exits of {c} classes, the detector was fitted on "
                                 f"{self.num_exits} exits of {self.num_classes} classes")

    def fit(self, clean_logits, attacked_logits, *, seed: int = 0, max_iter: int = 200) -> "ExitStatsDetector":
        """Fit on the exit logits of clean and attacked inputs (each K tensors [N, C]).

        Full-batch L-BFGS (strong-Wolfe line search) from zero weights on the class-balanced mean
        binary cross-entropy plus `l2`/2 * |w|^2, in float64. The problem is convex and the start
        fixed, so the fit is deterministic; `seed` is accepted for a uniform interface.
        """
        clean = _as_logits_list(clean_logits, "clean_logits")
        attacked = _as_logits_list(attacked_logits, "attacked_logits")
        if (len(clean), clean[0].shape[1]) != (len(attacked), attacked[0].shape[1]):
            raise DeepslothError(f"attacked_logits has {len(attacked)} exits of {attacked[0].shape[1]} classes, "
                                 f"clean_logits {len(clean)} of {clean[0].shape[1]}")
        max_iter = _positive_int(max_iter, "max_iter")
        with torch.no_grad():
            fc = self.features(clean).double().cpu()
            fa = self.features(attacked).double().cpu()
        mean = fc.mean(0)
        std = fc.std(0, unbiased=False).clamp_min(1e-6)
        zc, za = (fc - mean) / std, (fa - mean) / std
        w = torch.zeros(fc.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                                tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")
        bce = nn.functional.binary_cross_entropy_with_logits

        def closure():
            opt.zero_grad()
            loss = 0.5 * (bce(zc @ w + b, torch.zeros(len(zc), dtype=torch.float64))
                          + bce(za @ w + b, torch.ones(len(za), dtype=torch.float64)))
            loss = loss + 0.5 * self.l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.num_exits, self.num_classes = len(clean), int(clean[0].shape[1])
        self.mean, self.std = mean.float(), std.float()
        self.weight, self.bias = w.detach().float(), b.detach().float().reshape(())
        with torch.no_grad():
            acc_c = ((zc @ w + b) <= 0).double().mean()
            acc_a = ((za @ w + b) > 0).double().mean()
        self.train_accuracy = float(0.5 * (acc_c + acc_a))
        self.fitted = True
        return self

    def score_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Score [N] from a feature matrix [N, F] (as `features` makes it)."""
        self._require_fit()
        if feats.dim() != 2 or feats.shape[1] != self.num_features:
            raise DeepslothError(f"features must be [N, {self.num_features}], got {tuple(feats.shape)}")
        dev = feats.device
        z = (feats.float() - self.mean.to(dev)) / self.std.to(dev)
        return z @ self.weight.to(dev) + self.bias.to(dev)

    def score(self, logits_list) -> torch.Tensor:
        """The logit of "attacked" for each input, float32 [N], differentiable wrt the logits."""
        self._require_fit()
        items = _as_logits_list(logits_list)
        self._check_shape(items, "logits_list")
        return self.score_features(self.features(items))

    def score_outputs(self, outputs) -> torch.Tensor:
        """Scores from `ExitOutputs` (a `collect_exit_outputs` pass), without gradients."""
        return self.score_features(self.features_from_outputs(outputs))

    def _settings(self) -> dict:
        return {"stats": list(self.stats), "l2": self.l2}

    def _info(self) -> dict:
        if not self.fitted:
            return {}
        return {"num_exits": self.num_exits, "num_classes": self.num_classes,
                "train_accuracy": self.train_accuracy}

    def _state(self) -> Dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std, "weight": self.weight, "bias": self.bias}

    def _set_state(self, tensors: Dict[str, torch.Tensor], info: dict) -> None:
        try:
            self.num_exits, self.num_classes = int(info["num_exits"]), int(info["num_classes"])
            self.train_accuracy = info.get("train_accuracy")
            f = self.num_features
            mean, std, weight, bias = (tensors[k].float() for k in ("mean", "std", "weight", "bias"))
        except (KeyError, TypeError, ValueError) as exc:
            raise DeepslothError(f"saved exit-stats detector is incomplete ({exc})") from None
        if mean.shape != (f,) or std.shape != (f,) or weight.shape != (f,) or bias.numel() != 1:
            raise DeepslothError(f"saved exit-stats detector has tensors of the wrong shape for {f} features")
        self.mean, self.std, self.weight, self.bias = mean, std, weight, bias.reshape(())
        self.fitted = True


class InputDetector(Detector):
    """A small CNN that tells clean images from attacked ones (one logit per image).

    `net`: three 3x3 convolutions (widths `width`, 2*`width`, 4*`width`; the last two with
    stride 2), each followed by BatchNorm and ReLU, global average pooling and a linear layer.
    Images are float [N, channels, H, W] in [0, 1] (uint8 is converted). The weights are
    initialised from `seed`, without touching the global random state.
    """

    name = "input"

    def __init__(self, channels: int = 3, width: int = 32, seed: int = 0):
        super().__init__()
        self.channels = _positive_int(channels, "channels")
        self.width = _positive_int(width, "width")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise DeepslothError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.net = self._build()
        self.history: List[float] = []

    def _build(self) -> nn.Sequential:
        w = self.width
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            layers: List[nn.Module] = []
            for cin, cout, stride in ((self.channels, w, 1), (w, 2 * w, 2), (2 * w, 4 * w, 2)):
                layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                           nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 1)]
            return nn.Sequential(*layers).eval()

    def _images(self, x, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.channels or x.shape[0] == 0:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DeepslothError(f"{name} must be images [N, {self.channels}, H, W] with N >= 1, got {got}")
        return x

    def fit(self, clean_x: torch.Tensor, attacked_x: torch.Tensor, *, epochs: int = 40, batch_size: int = 128,
            lr: float = 1e-3, seed: int = 0, device="cpu") -> "InputDetector":
        """Train from the constructor's initialisation with Adam on binary cross-entropy.

        Every batch holds batch_size // 2 clean and as many attacked images; an epoch has as many
        batches as the larger set needs to be seen once (the smaller one is cycled through in
        fresh permutations). The order comes from a generator seeded with `seed`, so on the CPU
        the fit is deterministic. The mean loss of every epoch is kept in `history`. On 500 + 500 CIFAR-10
        images the loss stays near log 2 for the first ten epochs or so before it drops: the default 40
        epochs (320 steps) are needed, not a safety margin.
        """
        clean_x, attacked_x = self._images(clean_x, "clean_x"), self._images(attacked_x, "attacked_x")
        if clean_x.shape[2:] != attacked_x.shape[2:]:
            raise DeepslothError(f"attacked_x images are {tuple(attacked_x.shape[2:])}, clean_x images "
                                 f"{tuple(clean_x.shape[2:])}")
        epochs = _positive_int(epochs, "epochs")
        batch_size = _positive_int(batch_size, "batch_size", minimum=2)
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise DeepslothError(f"lr must be a positive number, got {lr!r}")
        half = batch_size // 2
        nc, na = len(clean_x), len(attacked_x)
        steps = math.ceil(max(nc, na) / half)
        gen = torch.Generator().manual_seed(int(seed))

        def order(n: int) -> torch.Tensor:
            reps = math.ceil(steps * half / n)
            return torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[:steps * half]

        self.net = self._build().to(device).train()
        opt = torch.optim.Adam(self.net.parameters(), lr=float(lr))
        target = torch.cat([torch.zeros(half), torch.ones(half)]).to(device)
        self.history = []
        for _ in range(epochs):
            ic, ia = order(nc), order(na)
            total = 0.0
            for s in range(steps):
                sl = slice(s * half, (s + 1) * half)
                xb = torch.cat([to_float01(clean_x[ic[sl]]), to_float01(attacked_x[ia[sl]])]).to(device)
                loss = nn.functional.binary_cross_entropy_with_logits(self.net(xb).squeeze(1), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            self.history.append(total / steps)
        self.net.eval()
        self.fitted = True
        return self

    def score(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """The logit of "attacked" for each image, float32 [N] on x's device; differentiable wrt x
        (BatchNorm in inference mode). Large inputs go through the net in batches."""
        self._require_fit()
        x = self._images(x, "x")
        batch_size = _positive_int(batch_size, "batch_size")
        self.net.eval()
        dev = next(self.net.parameters()).device
        out = [self.net(to_float01(x[i:i + batch_size]).to(dev)).squeeze(1)
               for i in range(0, len(x), batch_size)]
        return torch.cat(out).to(x.device)

    def _settings(self) -> dict:
        return {"channels": self.channels, "width": self.width, "seed": self.seed}

    def _info(self) -> dict:
        return {"history": list(self.history)} if self.fitted else {}

    def _state(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.net.state_dict().items()}

    def _set_state(self, tensors: Dict[str, torch.Tensor], info: dict) -> None:
        try:
            self.net.load_state_dict(tensors)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise DeepslothError(f"saved input detector does not match its settings ({first})") from None
        self.net.eval()
        self.history = [float(h) for h in info.get("history", [])]
        self.fitted = True


# ---------------------------------------------------------------- stream monitor

class StreamMonitor:
    """Alarm when too many inputs of a stream reach a late exit.

    Over every sliding window of `window` consecutive inputs the monitor counts the inputs whose
    exit index (0-based, K-1 = final) is `late_from` or later, and raises an alarm when that
    count exceeds `max_late` (the threshold share is `max_late / window`). `fit` calibrates
    `max_late` on clean traffic.

    `late_from` defaults to the smallest exit index that at most half of the clean inputs reach
    (the final exit when more than half of them reach it), the cut that splits clean traffic
    closest to evenly while keeping the late side the minority.
    """

    name = "stream-monitor"

    def __init__(self, window: int = 100, late_from: Optional[int] = None):
        self.window = _positive_int(window, "window")
        self.late_from = None if late_from is None else _positive_int(late_from, "late_from")
        self._late_from_given = self.late_from is not None
        self.num_exits: Optional[int] = None
        self.max_late: Optional[int] = None
        self.target_rate: Optional[float] = None
        self.calibration_rate: Optional[float] = None
        self.clean_late_share: Optional[float] = None
        self.clean_histogram: Optional[torch.Tensor] = None
        self.seed = 0
        self.windows = 0
        self.fitted = False

    @property
    def threshold(self) -> Optional[float]:
        """The alarm threshold as a share of the window (alarm when the late share exceeds it)."""
        return None if self.max_late is None else self.max_late / self.window

    def _require_fit(self) -> None:
        if not self.fitted:
            raise DeepslothError("the stream monitor is not fitted; call fit(...) or load(...) first")

    def fit(self, clean_exit_indices, num_exits: int, false_alarm_rate: float = 0.01, *, seed: int = 0,
            windows: int = 20000) -> "StreamMonitor":
        """Calibrate on clean exit indices.

        The clean indices are shuffled (generator seeded with `seed`) and cut into consecutive
        windows, with fresh shuffles until `windows` windows are collected; `max_late` is the
        smallest count such that at most a `false_alarm_rate` share of those windows holds more
        late inputs (the module's quantile rule).
        """
        num_exits = _positive_int(num_exits, "num_exits", minimum=2)
        far = _check_fpr(false_alarm_rate, "false_alarm_rate")
        windows = _positive_int(windows, "windows")
        idx = _exit_indices(clean_exit_indices, "clean_exit_indices", num_exits)
        if len(idx) < self.window:
            raise DeepslothError(f"clean_exit_indices holds {len(idx)} inputs, fewer than window = {self.window}")
        hist = torch.bincount(idx, minlength=num_exits).double()
        reach = (hist.flip(0).cumsum(0).flip(0) / len(idx))   # reach[j] = share with exit >= j
        if self._late_from_given:
            if self.late_from > num_exits - 1:
                raise DeepslothError(f"late_from must be <= {num_exits - 1} (the final exit), got {self.late_from}")
            late_from = self.late_from
        else:
            below = [j for j in range(1, num_exits) if reach[j] <= 0.5]
            late_from = below[0] if below else num_exits - 1
        self.num_exits, self.late_from = num_exits, late_from
        late = (idx >= late_from).long()
        per = len(idx) // self.window
        gen = torch.Generator().manual_seed(int(seed))
        counts = []
        for _ in range(math.ceil(windows / per)):
            perm = late[torch.randperm(len(late), generator=gen)][:per * self.window]
            counts.append(perm.view(per, self.window).sum(1))
        counts = torch.cat(counts)[:windows]
        self.max_late = int(upper_quantile_threshold(counts, far))
        self.calibration_rate = float((counts > self.max_late).double().mean())
        self.target_rate, self.seed, self.windows = far, int(seed), windows
        self.clean_late_share = float(late.double().mean())
        self.clean_histogram = hist / len(idx)
        self.fitted = True
        return self

    # -- watching a stream
    def late_counts(self, exit_indices) -> torch.Tensor:
        """int64 [L - window + 1]: late inputs in each sliding window of the stream (empty when
        the stream is shorter than the window). A 2-D input [S, L] is S streams."""
        self._require_fit()
        t = torch.as_tensor(exit_indices.detach() if isinstance(exit_indices, torch.Tensor) else exit_indices)
        if t.dim() == 2:
            rows = [self.late_counts(r) for r in t]
            return torch.stack(rows) if rows else torch.zeros(0, 0, dtype=torch.long)
        idx = _exit_indices(t, "exit_indices", self.num_exits)
        late = (idx >= self.late_from).long()
        c = torch.cat([torch.zeros(1, dtype=torch.long), late.cumsum(0)])
        return c[self.window:] - c[:-self.window] if len(late) >= self.window else c[:0]

    def alarms(self, exit_indices) -> torch.Tensor:
        """bool per sliding-window position: does the window ending there raise an alarm?"""
        return self.late_counts(exit_indices) > self.max_late

    # -- evaluation on synthetic streams
    def _mixed_streams(self, clean: torch.Tensor, attacked: Optional[torch.Tensor], shares: Sequence[float],
                       seed: int, streams: int, length: Optional[int]) -> List[float]:
        streams = _positive_int(streams, "streams")
        length = len(clean) if length is None else _positive_int(length, "length")
        if length < self.window:
            raise DeepslothError(f"length must be >= window = {self.window}, got {length}")
        # separate generators: the clean streams and the attack draws do not depend on the
        # attacked indices, so every share (and `false_alarm_rate`) sees the same clean traffic
        g_clean, g_mix, g_att = (torch.Generator().manual_seed(int(seed) * 3 + i) for i in range(3))
        alarms = torch.zeros(len(shares), dtype=torch.float64)
        pos = torch.arange(length)
        for _ in range(streams):
            c = clean[torch.randperm(len(clean), generator=g_clean)][pos % len(clean)]
            u = torch.rand(length, generator=g_mix, dtype=torch.float64)   # shared by every share
            a = attacked[torch.randperm(len(attacked), generator=g_att)][pos % len(attacked)] \
                if attacked is not None else c
            for i, share in enumerate(shares):
                alarms[i] += self.alarms(torch.where(u < share, a, c)).double().mean()
        return (alarms / streams).tolist()

    def false_alarm_rate(self, clean_exit_indices, *, seed: int = 1, streams: int = 20,
                         length: Optional[int] = None) -> float:
        """Alarm rate per window position on `streams` fresh shuffles of the clean indices (each a
        stream of `length` inputs, default all of them)."""
        self._require_fit()
        clean = _exit_indices(clean_exit_indices, "clean_exit_indices", self.num_exits)
        return self._mixed_streams(clean, None, [0.0], seed, streams, length)[0]

    def detection(self, clean_exit_indices, attacked_exit_indices, share: float, *, seed: int = 1,
                  streams: int = 20, length: Optional[int] = None) -> float:
        """Alarm rate per window position on mixed streams where each input is attacked (drawn from
        the attacked indices) with probability `share`, else clean. Share 0 with the same seed
        gives `false_alarm_rate`."""
        return self.alarm_curve(clean_exit_indices, attacked_exit_indices, [share], seed=seed,
                                streams=streams, length=length)[0]["alarm_rate"]

    def alarm_curve(self, clean_exit_indices, attacked_exit_indices, shares: Sequence[float] = SHARE_GRID, *,
                    seed: int = 1, streams: int = 20, length: Optional[int] = None) -> List[dict]:
        """[{share, alarm_rate}] over `shares`; every share sees the same streams and draws
        (common random numbers), so the curve is as smooth as the monitor allows."""
        self._require_fit()
        clean = _exit_indices(clean_exit_indices, "clean_exit_indices", self.num_exits)
        attacked = _exit_indices(attacked_exit_indices, "attacked_exit_indices", self.num_exits)
        shares = [float(s) for s in shares]
        if not shares or any(not 0.0 <= s <= 1.0 for s in shares):
            raise DeepslothError(f"share must be in [0, 1], got {shares}")
        rates = self._mixed_streams(clean, attacked, shares, seed, streams, length)
        return [{"share": s, "alarm_rate": r} for s, r in zip(shares, rates)]

    def max_undetected_share(self, clean_exit_indices, attacked_exit_indices, rate: Optional[float] = None, *,
                             seed: int = 1, streams: int = 20, length: Optional[int] = None) -> float:
        """The largest attacked share on the grid 0, 0.05, ..., 1 reached before the alarm rate
        first exceeds `rate` (default: the false-alarm rate the monitor was fitted for): what an
        attacker who knows the monitor can afford. 0.0 also when share 0 already exceeds `rate`;
        1.0 when no share does."""
        self._require_fit()
        rate = self.target_rate if rate is None else float(rate)
        if not 0.0 <= rate <= 1.0:
            raise DeepslothError(f"rate must be in [0, 1], got {rate}")
        curve = self.alarm_curve(clean_exit_indices, attacked_exit_indices, SHARE_GRID, seed=seed,
                                 streams=streams, length=length)
        best = 0.0
        for point in curve:
            if point["alarm_rate"] > rate:
                break
            best = point["share"]
        return best

    # -- description and files
    def _settings(self) -> dict:
        return {"window": self.window, "late_from": self.late_from if self._late_from_given else None}

    def describe(self) -> dict:
        out = {"name": self.name, **self._settings(), "fitted": self.fitted}
        if self.fitted:
            out.update({"num_exits": self.num_exits, "late_from_used": self.late_from,
                        "max_late": self.max_late, "threshold": self.threshold,
                        "false_alarm_rate": self.target_rate, "calibration_rate": self.calibration_rate,
                        "clean_late_share": self.clean_late_share, "seed": self.seed, "windows": self.windows})
        return out

    def save(self, directory) -> Path:
        """Write `detector.json` and `detector.safetensors` (the clean exit histogram)."""
        self._require_fit()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(directory / _TENSORS, {"clean_histogram": self.clean_histogram})
        write_json(directory / _JSON, {"format": _FORMAT, "name": self.name, "settings": self._settings(),
                                       "info": self.describe(), "thresholds": []})
        return directory

    @classmethod
    def load(cls, directory) -> "StreamMonitor":
        obj = load_detector(directory)
        if not isinstance(obj, cls):
            raise DeepslothError(f"{directory} holds a {obj.name!r} detector, not {cls.name!r}")
        return obj

    def _set_state(self, tensors: Dict[str, torch.Tensor], info: dict) -> None:
        try:
            self.num_exits, self.late_from = int(info["num_exits"]), int(info["late_from_used"])
            self.max_late, self.target_rate = int(info["max_late"]), float(info["false_alarm_rate"])
            self.calibration_rate, self.clean_late_share = info["calibration_rate"], info["clean_late_share"]
            self.seed, self.windows = int(info["seed"]), int(info["windows"])
            self.clean_histogram = tensors["clean_histogram"].double()
        except (KeyError, TypeError, ValueError) as exc:
            raise DeepslothError(f"saved stream monitor is incomplete ({exc})") from None
        self.fitted = True

    def __repr__(self) -> str:
        return f"StreamMonitor(window={self.window!r}, late_from={self._settings()['late_from']!r})"


# ---------------------------------------------------------------- loading

_KINDS = {"exit-stats": ExitStatsDetector, "input": InputDetector, "stream-monitor": StreamMonitor}


def load_detector(directory):
    """The detector or monitor saved in `directory` (by any class's `save`)."""
    directory = Path(directory)
    meta = read_json(directory / _JSON)
    if not isinstance(meta, dict) or meta.get("name") not in _KINDS or not isinstance(meta.get("settings"), dict):
        raise DeepslothError(f"{directory / _JSON} is not a saved deepsloth detector")
    if meta.get("format") != _FORMAT:
        raise DeepslothError(f"{directory / _JSON} has format {meta.get('format')!r}; this version reads {_FORMAT}")
    cls = _KINDS[meta["name"]]
    try:
        obj = cls(**meta["settings"])
    except TypeError as exc:
        raise DeepslothError(f"{directory / _JSON} has settings this version does not know ({exc})") from None
    tensors = load_tensors(directory / _TENSORS)
    info = meta.get("info") or {}
    obj._set_state(tensors, info)
    if isinstance(obj, Detector):
        try:
            obj.thresholds = {_key(f): float(t) for f, t in meta.get("thresholds", [])}
        except (TypeError, ValueError):
            raise DeepslothError(f"{directory / _JSON} has unreadable thresholds") from None
    return obj


__all__ = ["Detector", "ExitStatsDetector", "InputDetector", "StreamMonitor", "load_detector",
           "upper_quantile_threshold", "EXIT_STATS", "SHARE_GRID"]
