"""Paper-style tables and EEC figures from comparison files (never recomputes anything).

    results = load_results("results")                 # every comparison JSON under the folder
    models = group_by_model(results)                  # per model: row key -> record
    write_report("results", formats=("md", "tex", "csv"))   # tables.* and summary.* + eec_grid.png

Per model, rows are the attacks in the paper's order (clean first); columns are the final-exit
accuracy and, per RAD budget, the early-exit accuracy, efficacy, efficacy reduction and the
expected IoT latency amplification (docs/method.md §4.4, §6). The summary has one row per model
(how it was trained, clean final accuracy and efficacy, efficacy under per-sample and universal
DeepSloth and its reduction, final accuracy under PGD, at RAD 5%): the defence table's layout.
"""
from __future__ import annotations

import csv
import io
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import DeepslothError, DeepslothWarning
from ..io import atomic_path, read_json
from .compare import FORMAT
from .grid import ALL_CELLS

ORDER = ["clean", *ALL_CELLS]   # the paper's table order
FORMATS = ("md", "tex", "csv")


def load_results(folder: Path | str, skipped: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Every comparison record under `folder` (recursively), in a stable order.

    A JSON file that cannot be read (truncated, not JSON, too large or deep) is skipped: its one-line
    reason, which names the file, goes to `skipped` when a list is given, else into a `DeepslothWarning`.
    Readable JSON of another format (a model.json, an attack record) is left out silently."""
    folder = Path(folder)
    if not folder.exists():
        raise DeepslothError(f"no such folder: {folder}")
    files = [folder] if folder.is_file() else sorted(folder.rglob("*.json"))
    out = []
    for f in files:
        if f.name.startswith(("report", "tables")) or "adversarial" in f.parts[len(folder.parts):-1]:
            continue
        try:
            rec = read_json(f)
        except DeepslothError as exc:
            why = str(exc).splitlines()[0] if str(exc) else f"{f} is not readable JSON"
            if skipped is None:
                warnings.warn(f"skipping a result file: {why}", DeepslothWarning, stacklevel=2)
            else:
                skipped.append(why)
            continue
        if isinstance(rec, dict) and rec.get("format") == FORMAT:
            missing = _missing_fields(rec)
            if missing:
                why = f"{f} is a comparison record without {missing}"
                if skipped is None:
                    warnings.warn(f"skipping a result file: {why}", DeepslothWarning, stacklevel=2)
                else:
                    skipped.append(why)
                continue
            rec["_file"] = str(f)
            out.append(rec)
    return out


def _missing_fields(rec: Dict[str, Any]) -> Optional[str]:
    """What a comparison record lacks of what the tables read (None: nothing)."""
    if not isinstance(rec.get("cell"), str):
        return "its cell"
    if not isinstance(rec.get("model"), dict) or not isinstance(rec["model"].get("name"), str):
        return "its model's name"
    for key in ("data", "rad", "clean"):
        if not isinstance(rec.get(key), dict):
            return f"its {key!r} object"
    for k, row in rec["rad"].items():
        if not isinstance(row, dict) or not all(isinstance(row.get(f), dict) for f in ("clean", "attacked")):
            return f"the clean and attacked rows of RAD {k}"
    return None


def _order(cell: str) -> Tuple[int, str]:
    return (ORDER.index(cell) if cell in ORDER else len(ORDER), cell)


def _row_key(rec: Dict[str, Any]) -> str:
    return rec["cell"] if rec["cell"] == "clean" else f"{rec['cell']}#{rec.get('attack_id')}#{rec.get('seed')}"


def _distinguish(cells: Dict[str, Dict[str, Any]]) -> None:
    """Rows of one cell made with different settings get the differing settings in their label."""
    by_cell: Dict[str, List[Dict[str, Any]]] = {}
    for rec in cells.values():
        by_cell.setdefault(rec["cell"], []).append(rec)
    for recs in by_cell.values():
        if len(recs) < 2:
            continue
        keys = sorted({k for r in recs for k in (r.get("attack") or {}).get("params", {})} | {"seed"})
        for r in recs:
            p = dict((r.get("attack") or {}).get("params", {}), seed=r.get("seed"))
            differ = [k for k in keys if len({repr(dict((o.get("attack") or {}).get("params", {}),
                                                       seed=o.get("seed")).get(k)) for o in recs}) > 1]
            extra = ", ".join(f"{k}={p.get(k):.4g}" if isinstance(p.get(k), float) else f"{k}={p.get(k)}"
                              for k in differ)
            r["label"] = f"{r.get('label') or r['cell']} [{extra}]"


def group_by_model(results: Sequence[Dict[str, Any]]) -> "OrderedDict[str, Dict[str, Dict[str, Any]]]":
    """table name -> row key -> record, one table per (model, clean-input selection); rows are the
    attacks in the paper's order (clean first; taken from any record's clean side when there is no
    clean file). The same cell crafted with different settings gives one row per setting."""
    groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for rec in results:
        groups.setdefault((rec["model"]["name"], rec["data"].get("sha256") or str(rec["data"].get("n"))), []).append(rec)
    names: Dict[str, int] = {}
    for (name, _), recs in groups.items():
        names[name] = names.get(name, 0) + 1
    models: "OrderedDict[str, Dict[str, Dict[str, Any]]]" = OrderedDict()
    for (name, _), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[1][0]["data"]["n"])):
        title = name if names[name] == 1 else f"{name}, n={recs[0]['data']['n']}"
        cells: Dict[str, Dict[str, Any]] = {}
        for rec in sorted(recs, key=lambda r: r.get("created") or ""):
            cells[_row_key(rec)] = dict(rec)   # the same cell and settings twice: the newer wins
        if "clean" not in cells:
            any_rec = next(iter(cells.values()))
            cells["clean"] = dict(any_rec, cell="clean", label="clean", attacked=any_rec["clean"], attack=None,
                                  attack_id=None, seed=None,
                                  rad={k: dict(v, attacked=v["clean"], efficacy_reduction=None,
                                               latency_amplification=1.0) for k, v in any_rec["rad"].items()})
        _distinguish(cells)
        models[title] = dict(sorted(cells.items(), key=lambda kv: _order(kv[1]["cell"]) + (kv[0],)))
    return models


def _rads(cells: Dict[str, Dict[str, Any]]) -> List[str]:
    keys: List[str] = []
    for rec in cells.values():
        for k in rec["rad"]:
            if k not in keys:
                keys.append(k)
    return sorted(keys, key=float)


def _pct(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{v * 100:.{digits}f}"


def table(cells: Dict[str, Dict[str, Any]]) -> Tuple[List[str], List[List[str]]]:
    """(header, rows) for one model; numbers as printed in the paper's tables (percent, 3-digit efficacy)."""
    rads = _rads(cells)
    header = ["attack", "final acc %"]
    for k in rads:
        header += [f"EE acc % @{k}", f"efficacy @{k}", f"eff. red. % @{k}", f"latency x @{k}"]
    rows = []
    for rec in cells.values():
        cell = rec["cell"]
        row = [rec.get("label") or cell, _pct(rec["attacked"]["final_accuracy"])]
        for k in rads:
            r = rec["rad"].get(k)
            if r is None:
                row += ["-"] * 4
                continue
            red = None if cell == "clean" else r.get("efficacy_reduction")
            row += [_pct(r["attacked"]["accuracy"]), f"{r['attacked']['efficacy']:.3f}", _pct(red),
                    f"{r['latency_amplification']:.2f}"]
        rows.append(row)
    return header, rows


def _title(cells: Dict[str, Dict[str, Any]]) -> str:
    rec = next(iter(cells.values()))
    m, d = rec["model"], rec["data"]
    th = ", ".join(f"RAD {k}%: q = {v['threshold']:.2f}" for k, v in rec["rad"].items())
    return (f"{m['name']} ({m['arch']}, {m['dataset']}, {m['exits']} exits): {d['n']} test images "
            f"({d['kind']}); thresholds {th}")


def render_markdown(models: Dict[str, Dict[str, Dict[str, Any]]]) -> str:
    out = []
    for name, cells in models.items():
        header, rows = table(cells)
        out += [f"### {_title(cells)}", "", "| " + " | ".join(header) + " |",
                "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append("")
    return "\n".join(out)


def _tex(s: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("%", "\\%"), ("_", "\\_"), ("&", "\\&"), ("#", "\\#")):
        s = s.replace(a, b)
    return s


def render_latex(models: Dict[str, Dict[str, Dict[str, Any]]]) -> str:
    out = []
    for name, cells in models.items():
        header, rows = table(cells)
        rads = _rads(cells)
        out += ["% " + _title(cells), "\\begin{table}[t]", "\\centering", "\\small",
                "\\begin{tabular}{l r " + " ".join(["rrrr"] * len(rads)) + "}", "\\toprule",
                " & & " + " & ".join(f"\\multicolumn{{4}}{{c}}{{RAD {k}\\%}}" for k in rads) + " \\\\",
                " ".join(f"\\cmidrule(lr){{{3 + 4 * i}-{6 + 4 * i}}}" for i in range(len(rads))),
                "Attack & Acc. (\\%) & " + " & ".join(["EE acc. (\\%) & Efficacy & Red. (\\%) & Lat. $\\times$"]
                                                      * len(rads)) + " \\\\", "\\midrule"]
        out += [" & ".join(_tex(c) for c in r) + " \\\\" for r in rows]
        out += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{_tex(_title(cells))}}}", "\\end{table}", ""]
    return "\n".join(out)


def render_csv(models: Dict[str, Dict[str, Dict[str, Any]]]) -> str:
    """One row per (model, attack, RAD budget), raw numbers (fractions, not percent)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "arch", "dataset", "n", "cell", "attack", "norm", "scope", "rad", "threshold",
                "final_accuracy", "ee_accuracy", "efficacy", "clean_efficacy", "efficacy_reduction",
                "mean_cost", "latency_amplification"])
    for name, cells in models.items():
        for rec in cells.values():
            cell = rec["cell"]
            spec = rec.get("attack") or {}
            for k, r in rec["rad"].items():
                red = None if cell == "clean" else r.get("efficacy_reduction")
                w.writerow([name, rec["model"]["arch"], rec["model"]["dataset"], rec["data"]["n"], cell,
                            spec.get("attack", "clean"), spec.get("norm", ""), spec.get("scope", ""), k,
                            f"{r['threshold']:.2f}", f"{rec['attacked']['final_accuracy']:.4f}",
                            f"{r['attacked']['accuracy']:.4f}", f"{r['attacked']['efficacy']:.4f}",
                            f"{r['clean']['efficacy']:.4f}", "" if red is None else f"{red:.4f}",
                            f"{r['attacked']['mean_cost']:.4f}", f"{r['latency_amplification']:.4f}"])
    return buf.getvalue()


def training_label(model: Dict[str, Any]) -> str:
    """How a model was (adversarially) trained, from a comparison record's model block (docs/method.md §10.3)."""
    def one(a: Optional[Dict[str, Any]]) -> str:
        if not a:
            return "none"
        steps = a["specs"][0]["params"].get("steps") if a.get("specs") else a.get("steps")
        share = f", {a['share'] * 100:g}% of each batch" if a.get("share", 1) < 1 else ""
        return f"{a['attack']} ({'fast, 1 step' if a.get('fast') else f'{steps} steps'}{share})"
    return f"backbone AT: {one(model.get('parent_adversarial'))}; IC term: {one(model.get('adversarial'))}"


def _newest(cells: Dict[str, Dict[str, Any]], cell: str) -> Optional[Dict[str, Any]]:
    recs = [r for r in cells.values() if r["cell"] == cell]
    return max(recs, key=lambda r: r.get("created") or "") if recs else None


def summary_row(cells: Dict[str, Dict[str, Any]], rad: str = "5") -> Dict[str, Optional[float]]:
    """One model's headline numbers at RAD `rad` (raw fractions; None where the cell was not run):
    clean final accuracy and efficacy, efficacy and its reduction under per-sample and universal
    DeepSloth (l_inf), final-exit accuracy under PGD. The newest record wins where a cell was run twice."""
    clean = cells["clean"]
    def eff(cell):
        r = _newest(cells, cell)
        r = None if r is None else r["rad"].get(rad)
        return (None, None) if r is None else (r["attacked"]["efficacy"], r["efficacy_reduction"])
    pgd = _newest(cells, "pgd-linf-sample")
    ce = clean["rad"].get(rad)
    (se, sr), (ue, ur) = eff("deepsloth-linf-sample"), eff("deepsloth-linf-universal")
    return {"clean_final_accuracy": clean["attacked"]["final_accuracy"],
            "clean_efficacy": None if ce is None else ce["clean"]["efficacy"],
            "sample_efficacy": se, "sample_reduction": sr, "universal_efficacy": ue, "universal_reduction": ur,
            "pgd_final_accuracy": None if pgd is None else pgd["attacked"]["final_accuracy"]}


def summary_table(models: Dict[str, Dict[str, Dict[str, Any]]], rad: str = "5") -> Tuple[List[str], List[List[str]]]:
    """(header, rows), one row per model (the defence table's layout, docs/method.md §10.3)."""
    f3 = lambda v: "-" if v is None else f"{v:.3f}"   # noqa: E731
    rows = []
    for name, cells in models.items():
        s = summary_row(cells, rad)
        rows.append([name, training_label(cells["clean"]["model"]), _pct(s["clean_final_accuracy"]),
                     f3(s["clean_efficacy"]), f3(s["sample_efficacy"]), _pct(s["sample_reduction"]),
                     f3(s["universal_efficacy"]), _pct(s["universal_reduction"]), _pct(s["pgd_final_accuracy"])])
    header = ["model", "training", "clean final acc %", f"clean efficacy @{rad}",
              f"per-sample DeepSloth efficacy @{rad}", "reduction %", f"universal DeepSloth efficacy @{rad}",
              "reduction %", "final acc % under PGD"]
    return header, rows


def render_summary(models: Dict[str, Dict[str, Dict[str, Any]]], fmt: str = "md", rad: str = "5") -> str:
    """The per-model summary as Markdown, LaTeX (booktabs) or CSV (raw fractions)."""
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for i, (name, cells) in enumerate(models.items()):
            s = summary_row(cells, rad)
            if i == 0:
                w.writerow(["model", "training", "rad"] + list(s))
            w.writerow([name, training_label(cells["clean"]["model"]), rad]
                       + ["" if v is None else f"{v:.4f}" for v in s.values()])
        return buf.getvalue()
    header, rows = summary_table(models, rad)
    if fmt == "md":
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|"]
                         + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    if fmt == "tex":
        return "\n".join(["\\begin{table}[t]", "\\centering", "\\small", "\\begin{tabular}{l l rrrrrrr}",
                          "\\toprule", " & ".join(_tex(h) for h in header) + " \\\\", "\\midrule"]
                         + [" & ".join(_tex(c) for c in r) + " \\\\" for r in rows]
                         + ["\\bottomrule", "\\end{tabular}",
                            f"\\caption{{Per-model summary at RAD {rad}\\%}}", "\\end{table}", ""])
    raise DeepslothError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")


RENDER = {"md": render_markdown, "tex": render_latex, "csv": render_csv}


def write_report(folder: Path | str, out: Optional[Path | str] = None, formats: Sequence[str] = FORMATS,
                 figure: bool = True, results: Optional[Sequence[Dict[str, Any]]] = None) -> Dict[str, str]:
    """Write tables.<fmt>, summary.<fmt> (and eec_grid.png) for every comparison under `folder` (or for
    `results`, when given: records `load_results` returned); returns the paths."""
    results = load_results(folder) if results is None else results
    if not results:
        raise DeepslothError(f"no comparison results under {folder} (run `deepsloth grid` or `deepsloth attack`)")
    models = group_by_model(results)
    out = Path(out) if out is not None else (Path(folder) if Path(folder).is_dir() else Path(folder).parent)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in formats:
        if fmt not in RENDER:
            raise DeepslothError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")
        path = out / f"tables.{fmt}"
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            Path(tmp).write_text(RENDER[fmt](models))
        written[fmt] = str(path)
        path = out / f"summary.{fmt}"
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            Path(tmp).write_text(render_summary(models, fmt))
        written[f"summary-{fmt}"] = str(path)
    if figure:
        from .figures import plot_eec_grid
        written["figure"] = str(plot_eec_grid(models, out / "eec_grid.png"))
    return written


def ceiling_note(rec: Optional[Dict[str, Any]], rad: str) -> Optional[str]:
    """Why a slowdown attack (the headline's per-sample DeepSloth) stays below 90% on a model where it sends
    (nearly) every input to the final exit: an input answered there still leaves the EEC curve's last
    segment, efficacy (1 - c_{K-1}) / 2 (docs/method.md §4.4), so no attack can cut efficacy by more than
    (clean - that) / clean, a real limit when the last internal exit sits well before the end of the network
    (few exits). None when the reduction is at least 90%, or the record lacks the costs or exit counts."""
    if rec is None:
        return None
    r = rec["rad"].get(rad) or {}
    v, costs = r.get("efficacy_reduction"), rec.get("costs") or []
    clean, attacked = r.get("clean") or {}, r.get("attacked") or {}
    counts, clean_counts, eff = attacked.get("exit_counts"), clean.get("exit_counts"), clean.get("efficacy")
    if v is None or v >= 0.9 or len(costs) < 2 or not counts or not clean_counts or not eff:
        return None
    from ..metrics.efficacy import efficacy
    floor = efficacy([0] * (len(costs) - 1) + [1], costs)   # every input at the final exit: (1 - c_{K-1}) / 2
    most = (eff - floor) / eff
    name = rec.get("label") or rec.get("cell")
    return (f"{name} sends {counts[-1] / sum(counts) * 100:.1f}% of the inputs to the final "
            f"exit (clean: {clean_counts[-1] / sum(clean_counts) * 100:.1f}%). An input answered there still leaves "
            f"efficacy (1 - c_{{K-1}}) / 2 = {floor:.3f}, as the last internal exit costs {costs[-2]:.3f} of the "
            f"network, so no attack can cut this model's efficacy by more than {most * 100:.1f}% at RAD {rad}%: "
            f"the attack reaches {v / most * 100:.0f}% of that.")


__all__ = ["ceiling_note", "load_results", "group_by_model", "table", "render_markdown", "render_latex",
           "render_csv", "summary_row", "summary_table", "render_summary", "training_label", "write_report", "ORDER"]
