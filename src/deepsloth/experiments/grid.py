"""The attack grid: every attack, norm and scope against one model, one result file per cell.

    specs = grid_specs("all", dataset="cifar10")          # PGD, PGD-avg, PGD-max, UAP, DeepSloth x 3 x 3
    run_grid(ctx, specs, out_dir="results", seed=0)

Layout under `out_dir/<model name>/`: `<cell>-<key>.json` comparisons (`experiments.compare`),
including `clean-<key>.json`, and the crafted inputs in `adversarial/` (`experiments.craft`).
A cell whose comparison file exists is skipped, so a killed grid resumes where it stopped
(and a per-sample cell that was interrupted resumes from its finished batches). A comparison is
written under its lock (`<file>.lock`, `io.exclusive`): a second process computing the same cell
at the same time stops with an error naming the first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..attacks.registry import NORMS, AttackSpec, parse_name, resolve_spec
from ..errors import DeepslothError
from ..io import exclusive, json_sha256, read_json, write_json
from ..progress import progress
from .compare import FORMAT, compare
from .context import Context
from .craft import DEFAULT_BATCH, craft, craft_key

# The paper's grid (docs/method.md §5): the accuracy baselines in l_inf, DeepSloth in every norm and scope.
BASELINES = ("pgd-linf-sample", "pgd-avg-linf-sample", "pgd-max-linf-sample", "uap-linf-universal")
DEEPSLOTH = tuple(f"deepsloth-{n}-{s}" for n in NORMS for s in ("sample", "universal", "class"))
ALL_CELLS = BASELINES + DEEPSLOTH


def grid_specs(attacks: Union[str, Iterable[str]] = "all", norms: Optional[Sequence[str]] = None,
               dataset: Optional[str] = None, **overrides: Any) -> List[AttackSpec]:
    """Resolved specs for `attacks` ("all", or names as `create_attack` takes them), restricted
    to `norms` when given; the order is the paper's table order."""
    if isinstance(attacks, str):
        attacks = [a for a in attacks.replace(",", " ").split() if a]
    names = list(attacks)
    if not names:
        raise DeepslothError("no attacks given")
    cells: List[str] = []
    for name in names:
        if name == "all":
            cells += list(ALL_CELLS)
        elif name == "clean":
            continue
        elif name.strip().lower() == "deepsloth":   # every norm and scope
            cells += list(DEEPSLOTH)
        else:
            base, norm, scope = parse_name(name)
            cells.append(f"{base}-{norm}-{scope}")
    if norms:
        keep = {n for n in norms}
        cells = [c for c in cells if parse_name(c)[1] in keep]
    seen, out = set(), []
    for c in cells:
        if c not in seen:
            seen.add(c)
            out.append(resolve_spec(c, dataset=dataset, **overrides))
    return out


def comparison_key(ctx: Context, craft_key_hex: Optional[str]) -> str:
    """Key of a comparison file: the crafted inputs' key (None: clean) and the evaluation setup."""
    ident = {"craft": craft_key_hex, "weights_sha256": ctx.weights_sha256, "data": ctx.data_record()["sha256"],
             "policy": ctx.policy.describe(), "rads": [float(r) for r in ctx.rads], "calib_n": ctx.calib_n}
    return json_sha256(ident, compact=False)


def model_dir(out_dir: Union[str, Path], ctx: Context) -> Path:
    return Path(out_dir) / ctx.name


def run_cell(ctx: Context, spec: Optional[AttackSpec], out: Path, *, seed: int = 0,
             batch_size: int = DEFAULT_BATCH, shard: Optional[Tuple[int, int]] = None,
             log: Callable[[str], None] = lambda s: None, dist=None) -> Tuple[Optional[Dict[str, Any]], Path, bool]:
    """(comparison or None when a shard is unfinished, its file, whether it already existed).

    Under torchrun (`dist`, a `deepsloth.distributed.Dist`), every rank calls this: per-sample
    crafting is split across the ranks (`experiments.sharded`), and rank 0 alone compares and
    writes; the other ranks get None."""
    ckey = None if spec is None else craft_key(ctx, spec, seed, batch_size)
    name = "clean" if spec is None else spec.cell
    path = out / f"{name}-{comparison_key(ctx, ckey)[:12]}.json"
    rec = _finished(path)
    distributed = dist is not None and dist.active
    if distributed:   # every rank takes rank 0's view of whether the cell is finished
        rec = rec if dist.broadcast(rec is not None) else None
    if rec is not None:
        return (rec if not distributed or dist.is_main else None), path, True
    ctx.thresholds   # calibrate first: a model without qualifying thresholds fails before any crafting
    crafted = None
    if spec is not None:
        if distributed:
            from .sharded import craft_sharded
            crafted = craft_sharded(ctx, spec, dist, seed=seed, batch_size=batch_size, out_dir=out / "adversarial",
                                    log=log)
            if not dist.is_main:
                return None, path, False
        else:
            crafted = craft(ctx, spec, seed=seed, batch_size=batch_size, out_dir=out / "adversarial", shard=shard,
                            log=log)
        if crafted is None:
            return None, path, False
    elif distributed and not dist.is_main:
        return None, path, False
    if shard is not None and shard[0] != 0:
        return None, path, False   # rank 0 writes the comparison
    with exclusive(path, str(path)):   # a second writer of this comparison stops with a clear error
        rec = _finished(path)          # ... or finds it written while it crafted
        if rec is not None:
            return rec, path, True
        rec = compare(ctx, crafted)
        write_json(path, rec)
    return rec, path, False


def _finished(path: Path) -> Optional[Dict[str, Any]]:
    """The comparison at `path` when it exists and is one (a damaged file is computed again, and so is an
    adaptive attack's evaluated on the bare model by an earlier version: it has no `deployment` block)."""
    if not path.is_file():
        return None
    try:
        rec = read_json(path)
    except DeepslothError:
        return None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        return None
    if ((rec.get("attack") or {}).get("params") or {}).get("defence") and "deployment" not in rec:
        return None
    return rec


def run_grid(ctx: Context, specs: Sequence[AttackSpec], out_dir: Union[str, Path], *, seed: int = 0,
             batch_size: int = DEFAULT_BATCH, include_clean: bool = True,
             shard: Optional[Tuple[int, int]] = None,
             log: Callable[[str], None] = lambda s: None, dist=None) -> List[Dict[str, Any]]:
    """Run every cell (skipping finished ones); returns a summary row per cell (under torchrun,
    `dist`: every rank runs this, rank 0 gets the rows)."""
    out = model_dir(out_dir, ctx)
    out.mkdir(parents=True, exist_ok=True)
    cells: List[Optional[AttackSpec]] = ([None] if include_clean else []) + list(specs)
    rows = []
    bar = progress(cells, desc=f"grid {ctx.name}", unit="cell")
    for spec in bar:
        name = "clean" if spec is None else spec.cell
        rec, path, existed = run_cell(ctx, spec, out, seed=seed, batch_size=batch_size, shard=shard, log=log,
                                      dist=dist)
        status = "done before" if existed else ("waiting for other ranks" if rec is None else "done")
        row: Dict[str, Any] = {"cell": name, "file": str(path), "status": status}
        if rec is not None:
            first = next(iter(rec["rad"]))
            r = rec["rad"][first]
            row.update(final_accuracy=rec["attacked"]["final_accuracy"], rad=first,
                       efficacy=r["attacked"]["efficacy"], efficacy_reduction=r["efficacy_reduction"])
            red = r["efficacy_reduction"]
            log(f"{name:26s} {status:11s} final acc {rec['attacked']['final_accuracy'] * 100:5.1f}%  "
                f"efficacy@{first}% {r['attacked']['efficacy']:.3f}"
                + ("" if spec is None or red is None else f"  reduction {red * 100:5.1f}%"))
        else:
            log(f"{name:26s} {status}")
        rows.append(row)
    return rows


__all__ = ["ALL_CELLS", "BASELINES", "DEEPSLOTH", "grid_specs", "run_grid", "run_cell", "comparison_key",
           "model_dir"]
