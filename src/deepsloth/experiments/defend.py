"""The defence study (docs/defences.md): every defence on one model, against the attacker who does not know it
and the one who does.

    rows = run_defences("resnet56_sdn_cifar10", ["jpeg:quality=75", "exit-stats", "exit-cap:cost=0.5"],
                        n=500, out_dir="results/defend")

Per model, the undefended attacks are crafted once on the first `n` test images (per-sample and universal
DeepSloth l_inf, PGD l_inf; results under `<out>/<model>/adversarial/`, content-named and resumable like the
grid's). Then, per defence, one record `<out>/<model>/defence-<slug>.json` (format "deepsloth-defence/1"; a
finished one is skipped on a rerun):

* clean: final accuracy and, per RAD budget, accuracy and efficacy of the defended deployment -- the defence's
  clean cost. An input transform changes every exit's outputs, so its thresholds are calibrated again on the
  defended clean outputs (where none keeps the budget, the strictest of the grid, marked); a cap is added to
  the deployment as it is, with the bare model's thresholds, so its clean cost is the accuracy the inputs it
  forces out early lose;
* per attack (per-sample and universal DeepSloth): efficacy, efficacy reduction and latency amplification
  per RAD budget, non-adaptive (crafted against the bare model) and adaptive (`adaptive-deepsloth` with the
  defence in its spec: BPDA / EOT for transforms, the capped loss for caps, the detector-evasion term for
  detectors), and for detectors the detection rate at 1% and 5% false positives;
* PGD: the final-exit accuracy of the defended deployment on the undefended PGD inputs.

A randomised transform's adaptive attack averages `eot` draws per step (4 by default; the attack's own default
is 8). Detectors and the stream monitor are set on the deployment's own clean traffic, the test images after the
first `n`, in two halves (`DefenceStudy.traffic`): a model answers its training images more confidently than the
traffic it serves, so thresholds set on training images raised more false alarms on test images than they were
set for. Detectors are fitted on `fit_n` training images and their per-sample DeepSloth versions (crafted like
the test ones); their thresholds for 1% and 5% false positives are set on the first half of that traffic and
their false-positive rates measured on the second. The adaptive attack against a detector searches its weight
on the first `probe_n` test images (the smallest of `DETECTOR_WEIGHTS` whose detection rate at 5% false
positives is at most 5%, else the one with the lowest) and then crafts every input with it. A stream monitor is
calibrated for 1% false alarms on the first half, its false-alarm rate is measured on streams of the second,
which also make up the clean part of attacked streams, and it is evaded by throttling: its adaptive row is the
largest attacked share (on a grid of 5%) whose streams raise no more alarms than the clean ones do (or than 1%,
when those raise fewer), and the efficacy reduction at that share (efficacy is linear in the exit counts, so it
is the share times the full reduction).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import __version__
from ..attacks.registry import resolve_spec
from ..defences import Defence, parse_defence, register
from ..errors import DeepslothError
from ..io import read_json, write_json
from ..precision import resolve_amp
from .compare import compare
from .context import Context, load_context
from .craft import craft
from .deployment import deployment, detector_scores, exit_logits, reset, resolve_cap
from .results import Crafted

FORMAT = "deepsloth-defence/1"
DEFAULT_DEFENCES = ("jpeg:quality=75", "bitdepth:bits=4", "median:kernel=3", "resize-pad:shrink=4",
                    "exit-stats", "input", "monitor:window=100", "exit-cap:cost=0.5", "latency-cap:budget_ms=50")
FPRS = (0.01, 0.05)
# draws per step of the adaptive attack on a randomised transform: half the attack's default (each draw costs a
# forward and backward of the model; the study states what it used)
STUDY_EOT = 4
DETECTOR_WEIGHTS = (1.0, 10.0, 100.0)
MONITOR_RATE = 0.01   # the stream monitor's false-alarm rate on clean traffic
ATTACKS = {"sample": "deepsloth-linf-sample", "universal": "deepsloth-linf-universal"}


def slug(spec: str) -> str:
    """A file-name-safe form of a defence's canonical name."""
    return re.sub(r"[^a-z0-9.]+", "-", spec.lower()).strip("-")


# ----------------------------------------------------------------------------- numbers
def _evaluate(ctx: Context, crafted: Crafted) -> Dict[str, Any]:
    reset(ctx)
    rec = compare(ctx, crafted)
    return {"final_accuracy": rec["attacked"]["final_accuracy"],
            "rad": {k: {"efficacy": r["attacked"]["efficacy"], "efficacy_reduction": r["efficacy_reduction"],
                        "latency_amplification": r["latency_amplification"],
                        "accuracy": r["attacked"]["accuracy"]} for k, r in rec["rad"].items()},
            "crafted": str(crafted.path) if crafted.path else None}


def _clean(ctx: Context) -> Dict[str, Any]:
    rec = compare(ctx, None)
    return {"final_accuracy": rec["clean"]["final_accuracy"],
            "rad": {k: {"threshold": r["threshold"], "accuracy": r["clean"]["accuracy"],
                        "efficacy": r["clean"]["efficacy"], "mean_cost": r["clean"]["mean_cost"],
                        "qualified": ctx.thresholds[k].get("qualified", True)}
                    for k, r in rec["rad"].items()}}


# ----------------------------------------------------------------------------- inputs
def _clean_context(ctx: Context, pool, n: int, start: int = 0) -> Context:
    """A context whose inputs are clean images `start` .. `start + n - 1` of `pool` (a split) in stored order.
    Training images: the first `n` are what detectors are fitted on. Test images after the evaluated ones: the
    deployment's own clean traffic detector thresholds and the stream monitor are set on (`DefenceStudy.traffic`;
    a model is more confident on its training images than on the traffic it serves)."""
    from ..data.selection import subset_dataset
    from ..exits.calibrate import data_sha256

    if start + 1 > len(pool):
        raise DeepslothError(f"the {pool.split} split has {len(pool)} images; this needs more than {start}")
    chosen = subset_dataset(pool, indices=torch.arange(start, min(start + n, len(pool))))
    d = dataclasses.replace(ctx, test=chosen, _cache={k: v for k, v in ctx._cache.items() if k == "wsha"})
    which = f"the first {len(chosen)}" if start == 0 else f"the {len(chosen)} after the first {start}"
    d._cache["data"] = {"dataset": ctx.dataset, "split": pool.split, "kind": ctx.data_kind, "n": len(chosen),
                        "selection": f"{which} {'training' if pool.split == 'train' else pool.split} images in "
                                     f"stored order",
                        "source": chosen.source, "sha256": data_sha256(chosen.images, chosen.labels)}
    d._cache["thresholds"], d._cache["calibration"] = ctx.thresholds, ctx.calibration
    return d


def _probe_context(ctx: Context, n: int) -> Context:
    d = dataclasses.replace(ctx, test=ctx.test.subset(min(n, ctx.n)), calib_n=ctx.calib_n,
                            _cache={k: v for k, v in ctx._cache.items() if k == "wsha"})
    d._cache["thresholds"], d._cache["calibration"] = ctx.thresholds, ctx.calibration
    return d


def _exit_indices(ctx: Context, rad: str, outputs=None) -> torch.Tensor:
    """The exit each input leaves at, at budget `rad`: of `outputs` (default: the context's clean inputs')."""
    outs = ctx.clean_outputs if outputs is None else outputs
    return ctx.policy.exit_index(outs, float(ctx.thresholds[rad]["threshold"]))


def current(rec: Dict[str, Any]) -> bool:
    """False for a detector or stream monitor record calibrated on training images (no `calibration` /
    `monitor_fit` of clean test traffic): a model answers its training images more confidently, so their
    false-alarm rates on the traffic it serves were above the rates they were set for."""
    if "monitor" in rec and "monitor_fit" not in rec:
        return False
    return "detector" not in rec or "calibration" in (rec.get("detector") or {})


def sample_reduction(rec: Dict[str, Any], rad: str, side: str) -> Optional[float]:
    """Per-sample DeepSloth's efficacy reduction at `rad` against `rec`'s defence: `side` "non_adaptive" or
    "adaptive" (for a stream monitor, the throttled attack that stays below its alarm)."""
    if side == "adaptive" and (rec.get("monitor") or {}).get(rad) is not None:
        return (rec["monitor"][rad].get("sample") or {}).get("throttled_efficacy_reduction")
    a = ((rec.get("attacks") or {}).get("sample") or {}).get(side) or {}
    return ((a.get("rad") or {}).get(rad) or {}).get("efficacy_reduction")


def detection_rate(rec: Dict[str, Any], side: str, fpr: str = "0.05") -> Optional[float]:
    """A detector record's detection rate of per-sample DeepSloth (`side`: "non_adaptive" or "adaptive") at
    the false-positive rate `fpr`; None for other defences."""
    sample = ((rec.get("attacks") or {}).get("sample") or {}).get(side) or {}
    return (sample.get("detection") or {}).get(fpr)


# ----------------------------------------------------------------------------- the study
class DefenceStudy:
    """One model's defence study; `row(text)` computes (or reads back) one defence's record."""

    def __init__(self, model: str, *, n: int = 500, out_dir: Path | str = "deepsloth-results", seed: int = 0,
                 device: str = "auto", amp: Optional[str] = None, rads: Sequence[float] = (5.0, 15.0),
                 fit_n: int = 500, probe_n: int = 100, eot: int = STUDY_EOT, batch_size: Optional[int] = None,
                 data_root: Optional[str] = None, attack_options: Optional[Dict[str, Any]] = None,
                 log: Callable[[str], None] = lambda s: None):
        self.ctx = load_context(model, n=n, rads=rads, device=device, data_root=data_root)
        self.out = Path(out_dir) / self.ctx.name
        self.adv = self.out / "adversarial"
        self.seed, self.batch_size, self.fit_n, self.probe_n, self.log = seed, batch_size, fit_n, probe_n, log
        self.eot = eot
        self.amp = resolve_amp(amp, self.ctx.device) if amp not in (None, "off") else None
        self.attack_options = dict(attack_options or {})   # e.g. fewer steps, for a quick look
        self._crafted: Dict[Any, Crafted] = {}
        self._cache: Dict[str, Any] = {}

    # -- crafting
    def spec(self, cell: str, **options: Any):
        from ..attacks.registry import allowed_options, parse_name
        base, _, scope = parse_name(cell)
        extra = {k: v for k, v in self.attack_options.items() if k in allowed_options(base, scope)}
        return resolve_spec(cell, dataset=self.ctx.dataset, device=self.ctx.device, amp=self.amp, **extra, **options)

    def crafted(self, cell: str, ctx: Optional[Context] = None, **options: Any) -> Crafted:
        ctx = ctx or self.ctx
        spec = self.spec(cell, **options)
        key = (id(ctx), spec.id)
        if key not in self._crafted:
            self._crafted[key] = craft(ctx, spec, seed=self.seed, batch_size=self.batch_size, out_dir=self.adv,
                                       log=self.log)
        return self._crafted[key]

    def baseline(self) -> Dict[str, Crafted]:
        return {"sample": self.crafted(ATTACKS["sample"]), "universal": self.crafted(ATTACKS["universal"]),
                "pgd": self.crafted("pgd-linf-sample")}

    @property
    def train_ctx(self) -> Context:
        if "train" not in self._cache:
            self._cache["train"] = _clean_context(self.ctx, self.ctx.train_pool(), self.fit_n)
        return self._cache["train"]

    def traffic(self, window: int = 1) -> Tuple[Context, Context]:
        """The deployment's own clean traffic, the test images after the evaluated ones, in two halves: one
        sets detector thresholds and calibrates the stream monitor, the other measures their false alarms
        (and makes up the clean part of a monitor's attacked streams). Each half holds at least `window`."""
        ctx = self.ctx
        if "traffic" not in self._cache:
            pool = ctx.test_pool()
            half = (len(pool) - ctx.n) // 2
            self._cache["traffic"] = None if half < 1 else (
                _clean_context(ctx, pool, half, start=ctx.n),
                _clean_context(ctx, pool, len(pool) - ctx.n - half, start=ctx.n + half))
        halves = self._cache["traffic"]
        if halves is None or halves[0].n < window:
            rest = 0 if halves is None else halves[0].n + halves[1].n
            raise DeepslothError(f"detectors and monitors are calibrated on the clean test images after the first "
                                 f"{ctx.n}, in two halves of at least {window}; the test split has {rest} of them")
        return halves

    # -- one record
    def path(self, text: str) -> Path:
        return self.out / f"defence-{slug(parse_defence(text).spec)}.json"

    def row(self, text: str) -> Tuple[Dict[str, Any], bool]:
        """(record, whether it existed)."""
        defence = parse_defence(text)
        return self._record(self.path(text), {"spec": defence.spec, "kind": defence.kind, "name": defence.name,
                                              "params": defence.params},
                            lambda base: getattr(self, f"_{defence.kind}")(defence, base))

    def undefended(self) -> Tuple[Dict[str, Any], bool]:
        """(the undefended row, whether it existed)."""
        return self._record(self.out / "defence-none.json", {"spec": "none", "kind": "none", "name": "none",
                                                              "params": {}},
                            lambda base: {"clean": _clean(self.ctx),
                                          "attacks": {k: {"non_adaptive": _evaluate(self.ctx, base[k])}
                                                      for k in ATTACKS},
                                          "pgd": _evaluate(self.ctx, base["pgd"])})

    def _record(self, path: Path, defence: Dict[str, Any],
                numbers: Callable[[Dict[str, Crafted]], Dict[str, Any]]) -> Tuple[Dict[str, Any], bool]:
        """The record at `path` when it is one (a damaged one, or a detector's whose thresholds were set on its
        own training images, is computed again), else computed and written."""
        if path.is_file():
            try:
                rec = read_json(path)
                if rec.get("format") == FORMAT and current(rec):
                    return rec, True
            except DeepslothError:
                pass
        base = self.baseline()
        rec = {"format": FORMAT, "package_version": __version__,
               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "model": self.ctx.model_record(), "data": self.ctx.data_record(), "seed": self.seed,
               "amp": self.amp, "policy": self.ctx.policy.describe(), "defence": defence}
        rec.update(numbers(base))
        write_json(path, rec)
        return rec, False

    # -- per kind
    def _adaptive(self, defence_spec: str, dctx: Context, **options: Any) -> Dict[str, Tuple[Dict[str, Any], Crafted]]:
        out = {}
        for scope, cell in ATTACKS.items():
            crafted = self.crafted(f"adaptive-{cell}", defence=defence_spec, **options)
            out[scope] = (dict(_evaluate(dctx, crafted), attack_id=crafted.spec.id, spec=crafted.spec.to_dict()),
                          crafted)
        return out

    def _transform(self, defence: Defence, base) -> Dict[str, Any]:
        dctx = deployment(self.ctx, defence, seed=self.seed)
        adaptive = self._adaptive(defence.spec, dctx, **({"eot": self.eot} if defence.randomized else {}))
        return {"clean": _clean(dctx),
                "attacks": {k: {"non_adaptive": _evaluate(dctx, base[k]), "adaptive": adaptive[k][0]}
                            for k in ATTACKS},
                "pgd": _evaluate(dctx, base["pgd"])}

    def _cap(self, defence: Defence, base) -> Dict[str, Any]:
        concrete, why = resolve_cap(defence, self.ctx)
        dctx = deployment(self.ctx, concrete)
        adaptive = self._adaptive(concrete.spec, dctx)
        return {"cap": dict(why, exit=concrete.cap, resolved=concrete.spec), "clean": _clean(dctx),
                "attacks": {k: {"non_adaptive": _evaluate(dctx, base[k]), "adaptive": adaptive[k][0]}
                            for k in ATTACKS},
                "pgd": _evaluate(dctx, base["pgd"])}

    def _detector(self, defence: Defence, base) -> Dict[str, Any]:
        from ..defences.detectors import ExitStatsDetector, InputDetector
        ctx, tctx = self.ctx, self.train_ctx
        train_adv = self.crafted(ATTACKS["sample"], ctx=tctx)
        on_input = defence.name == "input"

        if on_input:
            det = InputDetector(seed=self.seed)
            det.fit(tctx.clean, train_adv.inputs, seed=self.seed, device=ctx.device)
        else:
            det = ExitStatsDetector()
            det.fit(exit_logits(tctx, tctx.clean), exit_logits(tctx, train_adv.inputs), seed=self.seed)
        calib, watch = self.traffic()
        clean_calib = detector_scores(calib, det)
        for fpr in FPRS:
            det.calibrate(clean_calib, fpr)
        name = register(det)
        det.save(self.out / "detectors" / name.replace("@", "-"))
        clean_watch = detector_scores(watch, det)

        def detection(x: torch.Tensor) -> Dict[str, float]:
            s = detector_scores(ctx, det, x)
            return {f"{f:g}": det.detection_rate(s, f) for f in FPRS}

        # the weight of the evasion term: searched on the first probe_n test images
        search, weight = [], None
        probe = _probe_context(ctx, self.probe_n)
        for w in DETECTOR_WEIGHTS:
            crafted = self.crafted(f"adaptive-{ATTACKS['sample']}", ctx=probe, defence=name, detector_weight=w)
            rate = det.detection_rate(detector_scores(probe, det, crafted.inputs), 0.05)
            search.append({"weight": w, "detection_at_0.05": rate})
            if rate <= 0.05:
                weight = w
                break
        if weight is None:
            weight = min(search, key=lambda r: (r["detection_at_0.05"], r["weight"]))["weight"]
        adaptive = self._adaptive(name, ctx, detector_weight=weight)
        attacks = {}
        for k in ATTACKS:
            na = dict(_evaluate(ctx, base[k]), detection=detection(base[k].inputs))
            ad = dict(adaptive[k][0], detection=detection(adaptive[k][1].inputs))
            attacks[k] = {"non_adaptive": na, "adaptive": ad}
        return {"detector": {"name": name, "fit_n": len(tctx.test), "calibration": calib.data_record(),
                             "held_out": watch.data_record(), "describe": det.describe(),
                             "false_positive_rate": {f"{f:g}": det.false_positive_rate(clean_watch, f) for f in FPRS},
                             "weight": weight, "weight_search": search},
                "clean": _clean(ctx), "attacks": attacks, "pgd": _evaluate(ctx, base["pgd"])}

    def _monitor(self, defence: Defence, base) -> Dict[str, Any]:
        from ..defences.detectors import StreamMonitor
        ctx, window = self.ctx, int(defence.params["window"])
        fit, watch = self.traffic(window)
        non_adaptive = {k: _evaluate(ctx, base[k]) for k in ATTACKS}
        attacked = {k: ctx.outputs(base[k].inputs, desc="forward") for k in ATTACKS}
        per_rad = {}
        for rad in (f"{r:g}" for r in ctx.rads):
            key = next(k for k in ctx.thresholds if float(k) == float(rad))
            mon = StreamMonitor(window=window)
            mon.fit(_exit_indices(fit, key), ctx.num_exits, false_alarm_rate=MONITOR_RATE, seed=self.seed)
            clean_idx = _exit_indices(watch, key)
            far = mon.false_alarm_rate(clean_idx, seed=self.seed + 1)
            row = {"late_from": mon.late_from, "threshold": mon.threshold, "false_alarm_rate": far}
            for k in ATTACKS:
                adv_idx = _exit_indices(ctx, key, attacked[k])
                # unnoticed: no more alarms than the clean traffic raises (at least the rate it was set for)
                share = mon.max_undetected_share(clean_idx, adv_idx, max(MONITOR_RATE, far), seed=self.seed + 1)
                full = non_adaptive[k]["rad"][key]["efficacy_reduction"]
                row[k] = {"alarm_rate": mon.detection(clean_idx, adv_idx, 1.0, seed=self.seed + 1),
                          "max_undetected_share": share,
                          "throttled_efficacy_reduction": None if full is None else share * full}
            per_rad[key] = row
        attacks = {k: {"non_adaptive": non_adaptive[k]} for k in ATTACKS}
        return {"monitor": per_rad, "monitor_fit": fit.data_record(), "monitor_watch": watch.data_record(),
                "clean": _clean(ctx), "attacks": attacks, "pgd": _evaluate(ctx, base["pgd"])}


def load_records(folder: Path | str) -> List[Dict[str, Any]]:
    """Every defence record (`defence-*.json`) under `folder`, recursively; unreadable ones are left out."""
    folder = Path(folder)
    files = [folder] if folder.is_file() else sorted(folder.rglob("defence-*.json"))
    out = []
    for f in files:
        if "adversarial" in f.parts:
            continue
        try:
            rec = read_json(f)
        except DeepslothError:
            continue
        if isinstance(rec, dict) and rec.get("format") == FORMAT:
            out.append(rec)
    return out


def run_defences(model: str, defences: Sequence[str] = DEFAULT_DEFENCES, **kwargs: Any) -> List[Dict[str, Any]]:
    """The undefended row and one record per defence (see the module docstring); finished records are read
    back, so a killed study resumes."""
    for text in defences:   # every name checked before anything is loaded or crafted
        parse_defence(text)
    log = kwargs.get("log", lambda s: None)
    study = DefenceStudy(model, **kwargs)
    for text in defences:   # caps made concrete for this model (a budget no exit meets is an error) before crafting
        d = parse_defence(text)
        if d.kind == "cap":
            resolve_cap(d, study.ctx)
    rows = []
    rec, existed = study.undefended()
    rows.append(rec)
    for text in defences:
        rec, existed = study.row(text)
        log(f"{rec['defence']['spec']:28s} {'done before' if existed else 'done'}")
        rows.append(rec)
    return rows


__all__ = ["load_records", "sample_reduction", "detection_rate", "current", "STUDY_EOT", "FORMAT",
           "DEFAULT_DEFENCES", "FPRS", "DefenceStudy", "run_defences",
           "slug"]
