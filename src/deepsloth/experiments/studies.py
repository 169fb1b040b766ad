"""Markdown for the studies beyond the attack grid, from saved comparison records (never recomputes).

    results = load_results("runs")                         # deepsloth.experiments.report
    print("\\n".join(transfer_section(results)))           # one study's section
    write_studies(results, "runs")                          # every study found: <study>.md

Which study a record belongs to is read from the record itself (`render_studies`):

* transfer: records with a `transfer` block (`deepsloth transfer`; its scenarios add `scenario`);
* defence: a folder in which some model was adversarially trained (its clean record's model block
  has `adversarial` or `parent_adversarial`); the table lists every model of the folder;
* budget: DeepSloth l_2 / l_1 records whose `eps` is not the attack's default for the dataset,
  beside the same model's cells at the default budgets;
* precision: a cell crafted in fp32 and again under bf16 autocast (same model, images, seed and
  other settings), each pair side by side;
* headline: per model not adversarially trained, the efficacy reduction of the paper's headline
  cells, and why UAP hardly moves the efficacy;
* defences: the defence study's own records (`deepsloth defend`, format "deepsloth-defence/1"), one table
  per model and RAD budget, non-adaptive beside adaptive.

Every section takes `text`, a mapping that replaces any of its default texts (`TRANSFER_TEXT`,
`DEFENCE_TEXT`, `BUDGET_TEXT`, `PRECISION_TEXT`, `TINY_TEXT`): a page describing how its runs were
made (scripts/results_page.py) passes its own. Templates are filled with `str.format` fields named
in each default's comment. Numbers are percent with one decimal, efficacies with three.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..io import atomic_path
from .defend import detection_rate, sample_reduction
from .report import _order, ceiling_note, _pct, group_by_model, summary_row, summary_table, training_label

Record = Dict[str, Any]
Models = Mapping[str, Mapping[str, Record]]

ATTACK_COLUMNS = ("clean efficacy | per-sample DeepSloth efficacy | reduction | universal DeepSloth efficacy | "
                  "reduction | final acc. under PGD")


def _text(defaults: Mapping[str, str], text: Optional[Mapping[str, str]]) -> Dict[str, str]:
    return {**defaults, **(text or {})}


def _red(rec: Record, rad: str = "5") -> Optional[float]:
    """The efficacy reduction at RAD `rad` (None where the record has no such budget)."""
    return (rec["rad"].get(rad) or {}).get("efficacy_reduction")


def _eff(rec: Record, rad: str = "5", side: str = "attacked") -> str:
    """The efficacy of one side at RAD `rad`, three decimals ("-" where the record has no such budget)."""
    v = ((rec["rad"].get(rad) or {}).get(side) or {}).get("efficacy")
    return "-" if v is None else f"{v:.3f}"


def attack_columns(cells: Mapping[str, Record]) -> List[str]:
    """Cells for ATTACK_COLUMNS (RAD 5%) from one model's rows (`summary_table`'s last six)."""
    return summary_table({"": cells})[1][0][3:]


def model_rows(models: Models, first_columns: Callable[[str, Mapping[str, Record]], List[str]]) -> List[str]:
    """One table row per model, by name: the name, `first_columns(name, cells)`, then ATTACK_COLUMNS."""
    return ["| " + " | ".join([name] + first_columns(name, cells) + attack_columns(cells)) + " |"
            for name, cells in sorted(models.items())]


# ------------------------------------------------------------------ the grid's headline shape

def headline(models: Models) -> List[str]:
    """Per model, one line: the efficacy reduction at RAD 5% of per-sample DeepSloth in each norm (against
    the paper's 90%), of the accuracy baselines and of the universal DeepSloth cells (docs/method.md §8.3).
    Models with none of these cells are left out."""
    lines = []
    for name, cells in models.items():
        by = {rec["cell"]: rec for rec in cells.values()}

        def red(cell, k="5"):
            r = by.get(cell)
            return None if r is None else _red(r, k)
        def line(k):
            parts = []
            for norm in ("linf", "l2", "l1"):
                v = red(f"deepsloth-{norm}-sample", k)
                if v is not None:
                    parts.append(f"per-sample DeepSloth {norm}: {v * 100:.1f}% "
                                 f"({'>= 90%' if v >= 0.9 else 'BELOW 90%'})")
            for cell in ("pgd-linf-sample", "pgd-avg-linf-sample", "pgd-max-linf-sample", "uap-linf-universal"):
                v = red(cell, k)
                if v is not None:
                    parts.append(f"{cell}: {v * 100:.1f}%")
            for cell in [c for c in by if c.startswith("deepsloth") and not c.endswith("sample")]:
                v = red(cell, k)
                if v is not None:
                    parts.append(f"{cell}: {v * 100:.1f}%")
            return "; ".join(parts)
        text = line("5")
        if text:
            lines.append(f"- **{name}** (efficacy reduction at RAD 5%): " + text)
            why = _first_exit_always(by)
            ceiling = None if why else ceiling_note(by.get("deepsloth-linf-sample"), "5")
            if ceiling:
                lines.append(f"  - {ceiling}")
            if why:
                lines.append(f"  - {why}")
                tighter = sorted({k for r in by.values() for k in r["rad"] if float(k) < 5}, key=float)
                for k in tighter[:1]:   # the budget where the deployment does use its later exits
                    q = by["clean"]["rad"][k]["threshold"] if k in by["clean"]["rad"] else None
                    lines.append(f"  - at RAD {k}%" + (f" (q = {q:.2f})" if q is not None else "") + ": "
                                 + line(k))
    return lines


def _first_exit_always(by_cell: Mapping[str, Record]) -> Optional[str]:
    """Why no attack can slow a model down, when its clean-calibrated confidence threshold at RAD 5% is at
    or below 1 / classes: every input's top softmax is at least that, so every input leaves at the first
    exit whatever it is (None otherwise)."""
    rec = by_cell.get("clean")
    if rec is None:
        return None
    q = (rec["rad"].get("5") or {}).get("threshold")
    classes = (rec.get("model") or {}).get("num_classes")
    if q is None or not classes or q > 1 / classes or (rec.get("policy") or {}).get("name", "confidence") != \
            "confidence":
        return None
    acc = (rec.get("clean") or {}).get("per_exit_accuracy") or []
    gap = f" (first exit {acc[0] * 100:.1f}%, final {acc[-1] * 100:.1f}%)" if len(acc) > 1 else ""
    return (f"its first exit is within the RAD 5% budget of its final exit{gap}, so the calibrated threshold "
            f"is {q:g} <= 1/{classes}: every input leaves at the first exit, clean or attacked, and no attack "
            f"changes its efficacy at this budget.")


def uap_note(models: Models) -> List[str]:
    """How far UAP got on its own crafting images, per model; where it changed few predictions, spent its
    l_inf budget and hardly moved the efficacy everywhere, why (a paragraph and a blank line, or none)."""
    rows, quiet, sizes = [], True, set()
    for name, cells in models.items():
        rec = next((r for r in cells.values() if r["cell"] == "uap-linf-universal"), None)
        if rec is None or not (rec.get("crafting") or {}).get("perturbation_norms"):
            continue
        info, norms = rec["crafting"]["craft"], rec["crafting"]["perturbation_norms"]
        sizes.add(info.get("n_images"))
        red = _red(rec)
        eps = ((rec.get("attack") or {}).get("params") or {}).get("eps") or 0
        quiet = quiet and info["fooling_rate"] < 0.5 and norms["linf"]["max"] >= 0.98 * eps \
            and red is not None and red < 0.10
        rows.append(f"{name} {info['fooling_rate'] * 100:.0f}% after {info['passes']} passes (l_inf "
                    f"{norms['linf']['max'] * 255:.0f}/255, l_2 {norms['l2']['max']:.2f}; final acc "
                    f"{rec['clean']['final_accuracy'] * 100:.1f}% -> {rec['attacked']['final_accuracy'] * 100:.1f}%)")
    if not rows:
        return []
    images = f"{sizes.pop()} crafting images" if len(sizes) == 1 and None not in sizes else "crafting images"
    facts = f"fooling rate on its own {images} (docs/method.md §5.1; the target is 80%): " + "; ".join(rows) + "."
    if not quiet:
        return ["UAP's " + facts, ""]
    return ["UAP, the one universal baseline, changes few predictions at this budget. Its " + facts + " Its "
            "perturbation fills the l_inf ball, so the budget is spent. Built from minimal l_2 DeepFool steps, it "
            "does not push the ICs towards uncertainty, and the efficacy hardly moves, as the paper "
            "found for accuracy attacks.", ""]


# ------------------------------------------------------------------ black-box transfer

TRANSFER_TEXT = {
    "heading": "## Black-box transfer",
    # fields: n (the victims' test images), seed
    "intro": "Adversarial inputs crafted on a surrogate, evaluated on the victim with the victim's clean-calibrated "
             "thresholds, next to the white-box reference (the same attack crafted on the victim). Efficacy and its "
             "reduction at RAD 5% unless marked; first {n} test images of the victim; seed {seed}.",
    "cross": "### Surrogate and victim given (`deepsloth transfer --surrogate S --victim V`)",
    # fields: victim, victim_accuracy (percent), arch, dataset
    "scenario1": "### Scenario 1: surrogates trained on a share of the victim's training data\n\n"
                 "Victim: {victim} (final accuracy {victim_accuracy}%). Surrogates: {arch} SDNs (CNN then IC-only; "
                 "epochs in the table) on a seeded per-class share of the victim's training split ({dataset}); "
                 "accuracy on the full test set.",
    # fields: arch, dataset
    "scenario2": "### Scenario 2: surrogates trained on other classes\n\n"
                 "Victim and surrogates: {arch} SDNs on c {dataset} classes, the surrogate sharing `shared` of the "
                 "victim's classes (seeded rule of `experiments.transfer.scenario2_subsets`: one victim per c). "
                 "Accuracies on the models' own test classes; the attacks run on the victim's test images.",
}

TRANSFER_COLUMNS = ("clean efficacy | efficacy under transfer | reduction (transfer) | reduction (white-box) | "
                    "reduction @15% (transfer) | @15% (white-box) | victim final acc. under attack")


def _scenario(rec: Record) -> Optional[str]:
    return (rec.get("scenario") or {}).get("name")


def _transfer_cells(r: Record) -> str:
    """The TRANSFER_COLUMNS of one transfer record (reductions at RAD 5% and 15%, transfer and white-box)."""
    def red(k):
        wb = r["transfer"]["white_box"].get(k) or {}
        return _pct(_red(r, k)), _pct(wb.get("efficacy_reduction"))
    (t5, w5), (t15, w15) = red("5"), red("15")
    return (f"{_eff(r, side='clean')} | {_eff(r)} | "
            f"{t5} | {w5} | {t15} | {w15} | {_pct(r['attacked']['final_accuracy'])}")


def _other_budgets(recs: Sequence[Record]) -> List[str]:
    """A line per transfer record evaluated at RAD budgets besides 5% and 15% (the MSDNet's 1%, where its
    calibration leaves the later exits some work): the reduction under transfer and white-box at each."""
    def pct(v: Optional[float]) -> str:
        return "-" if v is None else f"{_pct(v)}%"

    lines = []
    for r in sorted(recs, key=lambda r: (r["transfer"]["victim"]["name"], r["cell"])):
        extra = sorted((k for k in r["rad"] if k not in ("5", "15")), key=float)
        if not extra:
            continue
        tr = r["transfer"]
        lines.append(f"- {tr['victim']['name']} from {tr['surrogate']['name']}, {r['attack']['attack']} "
                     f"{r['attack']['norm']} {r['attack']['scope']}: " + "; ".join(
                         f"RAD {k}%: clean efficacy {_eff(r, k, side='clean')}, reduction {pct(_red(r, k))} under "
                         f"transfer, {pct((tr['white_box'].get(k) or {}).get('efficacy_reduction'))} white-box"
                         for k in extra))
    return (["Other RAD budgets:", ""] + lines + [""]) if lines else []


def _class_names(dataset: str, ids: Sequence[int]) -> str:
    from ..data.registry import CIFAR10_CLASSES
    return ", ".join(CIFAR10_CLASSES[i] if dataset == "cifar10" else str(i) for i in ids)


def transfer_section(results: Sequence[Record], text: Optional[Mapping[str, str]] = None, *,
                     tables: Optional[str] = None, figure: Optional[str] = None) -> List[str]:
    """The transfer tables (docs/method.md §10.2) of the transfer records among `results`: surrogate and
    victim given, scenario 1 (surrogates on a share of the victim's data), scenario 2 (other classes); one
    row per record, its efficacy and reduction under transfer beside the white-box reduction it records.
    `tables` (a Markdown link) and `figure` (an image path) point at the victims' full tables and EEC
    figure when there are some."""
    recs = [r for r in results if "transfer" in r]
    if not recs:
        return []
    t = _text(TRANSFER_TEXT, text)
    n = " or ".join(f"{v:,}" for v in sorted({r["data"]["n"] for r in recs}))
    seed = ", ".join(map(str, sorted({r.get("seed") for r in recs}, key=str)))
    out = [t["heading"], "", t["intro"].format(n=n, seed=seed), ""]
    if figure:
        out += [f"EEC curves of every victim (clean, white-box and transferred attacks"
                f"{f'; full tables in {tables}' if tables else ''}):", "", f"![transfer EEC curves]({figure})", ""]
    elif tables:
        out += [f"Full tables of every victim (clean, white-box and transferred attacks): {tables}.", ""]
    head = f"{TRANSFER_COLUMNS} |"
    cross = [r for r in recs if "scenario" not in r]
    if cross:
        out += [t["cross"], "", "| victim | surrogate | attack | " + head, "|" + "---|" * 10]
        for r in sorted(cross, key=lambda r: (r["transfer"]["victim"]["name"], r["cell"])):
            tr = r["transfer"]
            out.append(f"| {tr['victim']['name']} | {tr['surrogate']['name']} | {r['attack']['attack']}-"
                       f"{r['attack']['norm']}-{r['attack']['scope']} | {_transfer_cells(r)} |")
        out.append("")
        out += _other_budgets(cross)
    s1 = [r for r in recs if _scenario(r) == "scenario1"]
    if s1:
        v = s1[0]["transfer"]["victim"]
        out += t["scenario1"].format(victim=v["name"], victim_accuracy=_pct(v.get("final_accuracy")),
                                     arch=v.get("arch"), dataset=v.get("dataset")).split("\n") + [
                "", "| data | attack | surrogate final acc. | train images | epochs (CNN+IC) | train min | " + head,
                "|" + "---|" * 13]
        for r in sorted(s1, key=lambda r: (r["cell"].split(":")[-1], r["scenario"]["fraction_percent"])):
            st = r["scenario"].get("surrogate_training") or {}
            out.append(f"| {r['scenario']['fraction_percent']:g}% | {r['attack']['scope']} | "
                       f"{_pct(st.get('sdn_final_accuracy'))} | {st.get('train_images', '-')} | "
                       f"{st.get('cnn_epochs', '-')}+{st.get('ic_epochs', '-')} | "
                       f"{(st.get('train_seconds') or 0) / 60:.0f} | {_transfer_cells(r)} |")
        out.append("")
    s2 = [r for r in recs if _scenario(r) == "scenario2"]
    if s2:
        v = s2[0]["transfer"]["victim"]
        out += t["scenario2"].format(arch=v.get("arch"), dataset=v.get("dataset")).split("\n") + [
                "", "| c | shared | victim classes | surrogate classes | victim acc. | surrogate acc. | attack | "
                + head,
                "|" + "---|" * 14]
        for r in sorted(s2, key=lambda r: (r["scenario"]["classes"], r["cell"].split(":")[-1],
                                           r["scenario"]["shared"])):
            sc, ds = r["scenario"], r["transfer"]["victim"].get("dataset")
            out.append(f"| {sc['classes']} | {sc['shared']} | {_class_names(ds, sc['victim_classes'])} | "
                       f"{_class_names(ds, sc['surrogate_classes'])} | "
                       f"{_pct((sc.get('victim_training') or {}).get('sdn_final_accuracy'))} | "
                       f"{_pct((sc.get('surrogate_training') or {}).get('sdn_final_accuracy'))} | "
                       f"{r['attack']['scope']} | {_transfer_cells(r)} |")
        out.append("")
    return out


# ------------------------------------------------------------------ adversarial training (defence)

DEFENCE_TEXT = {
    "heading": "## Adversarial training against slowdown",
    "intro": "Per model: clean final-exit accuracy and efficacy, efficacy under per-sample and universal DeepSloth "
             "(l_inf) with its reduction, and final-exit accuracy under PGD (l_inf), at RAD 5% (thresholds "
             "calibrated on each model's own clean images).",
    "note": "",   # appended to the paragraph against the paper's finding (e.g. how the models were trained)
}


def _adversarial(cells: Mapping[str, Record]) -> bool:
    m = next(iter(cells.values()))["model"]
    return bool(m.get("parent_adversarial") or m.get("adversarial"))


def defence_section(models: Models, text: Optional[Mapping[str, str]] = None, *,
                    tables: Optional[str] = None) -> List[str]:
    """The defence table (docs/method.md §10.3): one row per model (how it was trained, clean final accuracy,
    then ATTACK_COLUMNS), then the paragraph of `defence_shape`. `tables`: a Markdown link to the full tables."""
    if not models:
        return []
    t = _text(DEFENCE_TEXT, text)
    intro = t["intro"] + (f" Full tables: {tables}." if tables else "")
    return [t["heading"], "", intro, "",
            f"| model | training | clean final acc. | {ATTACK_COLUMNS} |", "|" + "---|" * 9] + \
        model_rows(models, lambda name, cells: summary_table({name: cells})[1][0][1:3]) + [""] + \
        defence_shape(models, t["note"])


def defence_shape(models: Models, note: str = "") -> List[str]:
    """The defence table against the paper's finding (RAD 5%): the adversarially trained models' range of
    each column beside the first plainly trained model's value (a paragraph and a blank line; none unless
    the folder holds both kinds, each with its per-sample DeepSloth cell). `note` ends the paragraph."""
    rows = {n: summary_row(c) for n, c in models.items() if "clean" in c}
    at = {n: r for n, r in rows.items() if _adversarial(models[n])}
    plain = {n: r for n, r in rows.items() if n not in at}
    keys = ("clean_final_accuracy", "clean_efficacy", "sample_reduction", "universal_reduction", "pgd_final_accuracy")
    if not at or not plain or any(r[k] is None for r in rows.values() for k in keys):
        return []

    def rng(key, scale=1, fmt="{:.3f}"):
        lo, hi = (fmt.format(f(r[key] * scale for r in at.values())) for f in (min, max))
        return lo if lo == hi else f"{lo}-{hi}"
    spread = max(r["sample_reduction"] for r in at.values()) - min(r["sample_reduction"] for r in at.values())
    base_name, base = next(iter(plain.items()))
    verdict = ""
    if all(0 < r["sample_reduction"] < base["sample_reduction"] for r in at.values()):
        cost = all(r["clean_final_accuracy"] < base["clean_final_accuracy"] and
                   r["clean_efficacy"] < base["clean_efficacy"] for r in at.values())
        verdict = ("So adversarial training protects against DeepSloth only in part"
                   + (", at a cost in clean accuracy and efficacy" if cost else "") + ", as the paper found (its "
                   "VGG16-BN AT models: about 75% final accuracy, clean efficacy 0.53-0.74). ")
    backbones = {training_label(models[n]["clean"]["model"]).split("; IC term")[0] for n in at}
    ic_terms = ""
    if len(at) > 1 and len(backbones) == 1 and spread < 0.10:
        ic_terms = (f"The adversarial IC terms move the per-sample reduction by at most {spread * 100:.1f} points "
                    "between the models: the backbone's robustness does most of the work. ")
    return [("**Against the paper's finding** (RAD 5%): the adversarially trained models keep "
             f"{rng('clean_final_accuracy', 100, '{:.1f}')}% clean final accuracy ({base_name}: "
             f"{base['clean_final_accuracy'] * 100:.1f}%) and clean efficacy {rng('clean_efficacy')} "
             f"({base['clean_efficacy']:.3f}); per-sample DeepSloth still cuts their efficacy by "
             f"{rng('sample_reduction', 100, '{:.1f}')}% ({base['sample_reduction'] * 100:.1f}%), universal "
             f"DeepSloth by {rng('universal_reduction', 100, '{:.1f}')}% ({base['universal_reduction'] * 100:.1f}%), "
             f"and PGD leaves {rng('pgd_final_accuracy', 100, '{:.1f}')}% final accuracy "
             f"({base['pgd_final_accuracy'] * 100:.1f}%). " + verdict + ic_terms + note).rstrip(), ""]


# ------------------------------------------------------------------ budget checks

# scope: the l_inf cell and the l_2 / l_1 cells of a budget check
BUDGET_CELLS = {"universal": ("deepsloth-linf-universal", "deepsloth-l2-universal", "deepsloth-l1-universal"),
                "sample": ("deepsloth-linf-sample", "deepsloth-l2-sample", "deepsloth-l1-sample")}
BUDGET_TEXT = {
    "universal": "Universal DeepSloth in l_2 and l_1 with budgets other than the attack's defaults, next to the "
                 "same model's cells at the default budgets and its l_inf cell.",
    "sample": "Per-sample DeepSloth in l_2 and l_1 with budgets other than the attack's defaults, next to the "
              "same model's cells at the default budgets and its l_inf cell.",
    "tag": " **other budget**",   # marks the rows of the budget check
    # fields: name, kind ("universal" / "per-sample"), l2, l1 (the check's reductions, percent), l2_default,
    # l1_default, linf (the default-budget cells')
    "universal_note": "**{name}**: with the other budgets {kind} DeepSloth in l_2 / l_1 cuts the efficacy at RAD 5% "
                      "by {l2}% / {l1}% (default budgets: {l2_default}% / {l1_default}%; l_inf: {linf}%).",
    "sample_note": "**{name}**: with the other budgets {kind} DeepSloth in l_2 / l_1 cuts the efficacy at RAD 5% "
                   "by {l2}% / {l1}% (default budgets: {l2_default}% / {l1_default}%; l_inf: {linf}%).",
}


@functools.lru_cache(maxsize=None)
def _default_eps(cell: str, dataset: Optional[str]) -> Optional[float]:
    from ..attacks.registry import resolve_spec
    try:
        return resolve_spec(cell, dataset=dataset).params.get("eps")
    except ValueError:   # DeepslothError included: an attack or option this version does not know
        return None


def is_budget_check(rec: Record) -> bool:
    """A DeepSloth l_2 / l_1 record crafted with another budget than the attack's default for its dataset."""
    spec = rec.get("attack") or {}
    if "transfer" in rec or spec.get("attack") != "deepsloth" or spec.get("norm") not in ("l2", "l1"):
        return False
    eps = (spec.get("params") or {}).get("eps")
    default = _default_eps(f"deepsloth-{spec['norm']}-{spec.get('scope')}", rec["model"].get("dataset"))
    return eps is not None and default is not None and abs(eps - default) > 1e-9 * max(1.0, abs(default))


def _default_cells(grid: Sequence[Record], name: str, cells: Sequence[str]) -> List[Record]:
    """Model `name`'s records of `cells` in `grid`, in that order: the newest of each cell, on the images
    (clean-input selection) that have most of them (the larger selection on a tie)."""
    by_images: Dict[Any, Dict[str, Record]] = {}
    for r in grid:
        if r["model"]["name"] != name or r["cell"] not in cells or "transfer" in r:
            continue
        mine = by_images.setdefault(r["data"].get("sha256") or r["data"].get("n"), {})
        if r["cell"] not in mine or (r.get("created") or "") > (mine[r["cell"]].get("created") or ""):
            mine[r["cell"]] = r
    if not by_images:
        return []
    best = max(by_images.values(), key=lambda m: (len(m), next(iter(m.values()))["data"].get("n") or 0))
    return [best[c] for c in cells if c in best]


def budget_section(checks: Sequence[Record], grid: Sequence[Record] = (),
                   text: Optional[Mapping[str, str]] = None) -> List[str]:
    """Per scope (universal, per-sample), one table: each model's l_inf, l_2 and l_1 DeepSloth cells of
    `grid` (the newest record of each), then its records of `checks` (the same cells at other budgets),
    with the budget spent; after the table, one line per model that has all five reductions."""
    t = _text(BUDGET_TEXT, text)
    out: List[str] = []
    for scope, cells in BUDGET_CELLS.items():
        mine_all = [r for r in checks if r["cell"] in cells]
        if not mine_all:
            continue
        kind = "universal" if scope == "universal" else "per-sample"
        out += [f"## Budget check: {kind} DeepSloth in l_2 and l_1", "", t[scope], "",
                "| model | attack | images | eps (start) | achieved l_inf / l_2 / l_1 | efficacy @5 | reduction % @5 | "
                "reduction % @15 | final acc % |", "|" + "---|" * 9]
        notes: List[str] = []   # one summary per model, after the table (a paragraph inside it would split the table)
        for name in sorted({r["model"]["name"] for r in mine_all}):
            base = _default_cells(grid, name, cells)
            mine = [r for r in mine_all if r["model"]["name"] == name]
            for r in base + sorted(mine, key=lambda r: r["cell"]):
                n = r["norms"]
                tag = "" if any(r is b for b in base) else t["tag"]
                out.append(f"| {name} | {r['label']}{tag} | {r['data']['n']:,} | {r['attack']['params']['eps']:.3g} | "
                           f"{n['linf']['mean']:.3f} / {n['l2']['mean']:.2f} / {n['l1']['mean']:.1f} | "
                           f"{_eff(r)} | {_pct(_red(r))} | {_pct(_red(r, '15'))} | "
                           f"{_pct(r['attacked']['final_accuracy'])} |")

            def red(rs, cell):
                return next((_pct(_red(r)) for r in rs if r["cell"] == cell and _red(r) is not None), None)
            if not (all(red(rs, c) for rs in (base, mine) for c in cells[1:]) and red(base, cells[0])):
                continue
            notes += ["", t[f"{scope}_note"].format(
                name=name, kind=kind, l2=red(mine, cells[1]), l1=red(mine, cells[2]), l2_default=red(base, cells[1]),
                l1_default=red(base, cells[2]), linf=red(base, cells[0]))]
        out += notes + [""]
    return out


# ------------------------------------------------------------------ precision (fp32 / bf16)

PRECISION_TEXT = {
    "heading": "## Precision check: fp32 and bf16 autocast",
    "intro": "Cells crafted in fp32 and again under bf16 autocast (docs/method.md §3.7), on the same images with "
             "the same seed and settings; each pair reads fp32 / bf16.",
}


def precision_of(rec: Record) -> str:
    """"bf16" for a cell crafted under bf16 autocast, else "fp32"."""
    return ((rec.get("attack") or {}).get("params") or {}).get("amp") or "fp32"


def _twins(a: Record, b: Record) -> bool:
    """The same cell on the same model and images with the same seed and settings, in the other precision."""
    pa, pb = (dict((r.get("attack") or {}).get("params") or {}, amp=None) for r in (a, b))
    return (a is not b and a["cell"] == b["cell"] and a["model"]["name"] == b["model"]["name"]
            and a["model"].get("weights_sha256") == b["model"].get("weights_sha256")
            and (a["data"].get("sha256") or a["data"].get("n")) == (b["data"].get("sha256") or b["data"].get("n"))
            and a.get("seed") == b.get("seed") and pa == pb and precision_of(a) != precision_of(b)
            and "transfer" not in a and "transfer" not in b)


def precision_section(results: Sequence[Record], grid: Optional[Sequence[Record]] = None,
                      text: Optional[Mapping[str, str]] = None) -> List[str]:
    """Each attack record of `results` beside its twin in the other precision (looked for in `grid`, or in
    `results` itself), fp32 first: final accuracy, efficacy and reductions, then the largest gap in the
    reduction at RAD 5%. None without a pair."""
    t = _text(PRECISION_TEXT, text)
    pool = results if grid is None else grid
    rows, gaps, seen = [], [], []
    attacked = (r for r in results if r["cell"] != "clean")
    for r in sorted(attacked, key=lambda r: (r["model"]["name"], _order(r["cell"]))):
        twin = next((g for g in pool if _twins(g, r)), None)
        if twin is None or any(r is a or r is b for a, b in seen):
            continue
        pair = sorted((twin, r), key=lambda x: precision_of(x) != "fp32")   # fp32 first
        seen.append(pair)
        if _red(pair[0]) is not None and _red(pair[1]) is not None:
            gaps.append(abs(_red(pair[0]) - _red(pair[1])))

        def both(f):
            return " / ".join(f(x) for x in pair)
        rows.append(f"| {r['model']['name']} | {r['cell']} | {both(precision_of)} | "
                    f"{both(lambda x: _pct(x['attacked']['final_accuracy']))} | "
                    f"{both(_eff)} | {both(lambda x: _pct(_red(x)))} | {both(lambda x: _pct(_red(x, '15')))} |")
    if not rows:
        return []
    return [t["heading"], "", t["intro"], "",
            "| model | cell | precision | final acc % | efficacy @5 | reduction % @5 | reduction % @15 |",
            "|" + "---|" * 7] + rows + [
            ""] + ([f"The largest gap in the efficacy reduction at RAD 5% is {100 * max(gaps):.1f} points.", ""]
                   if gaps else [])


# ------------------------------------------------------------------ models with their training (Tiny ImageNet)

TINY_TEXT = {
    "heading": "## Models",
    "intro": "Per model: its final-exit accuracy on the test split (as its model.json records it), its training "
             "time (the CNN and the ICs), then the attacks at RAD 5%.",
    "columns": "final acc. | training (min, CNN + ICs)",
}


def tiny_section(models: Models, text: Optional[Mapping[str, str]] = None) -> List[str]:
    """One row per model: final accuracy and training minutes (CNN + ICs, as the model records them), then
    ATTACK_COLUMNS (the Tiny ImageNet table)."""
    if not models:
        return []
    t = _text(TINY_TEXT, text)

    def first(name, cells):
        m = cells["clean"]["model"]
        return [_pct(m.get("final_accuracy")),
                f"{((m.get('train_seconds') or 0) + (m.get('parent_train_seconds') or 0)) / 60:.0f}"]
    return [t["heading"], "", t["intro"], "", f"| model | {t['columns']} | {ATTACK_COLUMNS} |",
            "|" + "---|" * 9] + model_rows(models, first) + [""]


# ------------------------------------------------------------------ every study of a folder

DEFENCES_TEXT = {
    "intro": ("Each defence on the model's first {n} test images, against DeepSloth l_inf crafted without knowing "
              "the defence (non-adaptive: on the bare model) and with it (adaptive: BPDA / expectation over "
              "transformation for input transforms, the capped loss for caps, a detector-evasion term for "
              "detectors, throttling for the stream monitor; docs/defences.md). An input transform's thresholds "
              "are calibrated again on its defended clean outputs; a cap keeps the bare model's. EE acc.: the clean "
              "early-exit accuracy at that RAD's thresholds (under a cap, with the cap), what the deployment "
              "answers. Efficacy reductions at RAD {rad}%, the per-sample attack's latency amplification in "
              "brackets (the attacked mean latency over the clean one, IoT model): lower is better for the "
              "defender."),
}
DEFENCES_COLUMNS = ("defence | clean final acc. | clean EE acc. | clean efficacy | per-sample: non-adaptive | "
                    "adaptive | universal: non-adaptive | adaptive | detection at 1% / 5% FP: non-adaptive | "
                    "adaptive | PGD acc.")


def is_defence_record(rec: Record) -> bool:
    return isinstance(rec, dict) and rec.get("format") == "deepsloth-defence/1"


def _dpct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _amplification(cell: Mapping[str, Any]) -> str:
    v = cell.get("latency_amplification")
    return "" if v is None else f" ({v:.2f}x)"


def _defence_cells(rec: Record, rad: str) -> List[str]:
    clean = (rec.get("clean") or {}).get("rad", {}).get(rad) or {}
    cells = [rec["defence"]["spec"] + (f" (exit {rec['cap']['exit']})" if rec.get("cap") else ""),
             _dpct((rec.get("clean") or {}).get("final_accuracy")), _dpct(clean.get("accuracy")),
             "-" if clean.get("efficacy") is None else f"{clean['efficacy']:.3f}"]
    monitor = (rec.get("monitor") or {}).get(rad)
    for scope in ("sample", "universal"):
        a = (rec.get("attacks") or {}).get(scope) or {}
        na = ((a.get("non_adaptive") or {}).get("rad") or {}).get(rad) or {}
        cells.append(_dpct(na.get("efficacy_reduction")) + (_amplification(na) if scope == "sample" else ""))
        if monitor is not None:
            m = monitor.get(scope) or {}
            cells.append(f"{_dpct(m.get('throttled_efficacy_reduction'))} (share "
                         f"{_dpct(m.get('max_undetected_share'))})")
        else:
            ad = ((a.get("adaptive") or {}).get("rad") or {}).get(rad)
            cells.append("-" if ad is None else _dpct(ad.get("efficacy_reduction"))
                         + (_amplification(ad) if scope == "sample" else ""))
    sample = (rec.get("attacks") or {}).get("sample") or {}
    for side in ("non_adaptive", "adaptive"):
        det = (sample.get(side) or {}).get("detection")
        if det:
            cells.append(f"{_dpct(det.get('0.01'))} / {_dpct(det.get('0.05'))}")
        elif monitor is not None and side == "non_adaptive":
            cells.append(f"alarm {_dpct((monitor.get('sample') or {}).get('alarm_rate'))}")
        elif monitor is not None:
            cells.append("no more alarms than clean traffic")
        else:
            cells.append("-")
    cells.append(_dpct((rec.get("pgd") or {}).get("final_accuracy")))
    return cells


def defences_section(records: Sequence[Record], text: Optional[Mapping[str, str]] = None,
                     figure: Optional[str] = None) -> List[str]:
    """The defence study (`deepsloth defend`): one table per model and RAD budget, the undefended row first."""
    records = [r for r in records if is_defence_record(r)]
    if not records:
        return []
    t = _text(DEFENCES_TEXT, text)
    by_model: Dict[str, List[Record]] = {}
    for r in records:
        by_model.setdefault(r["model"]["name"], []).append(r)
    lines = ["## Defences against slowdown, non-adaptive and adaptive", ""]
    for name in sorted(by_model):
        rows = sorted(by_model[name], key=lambda r: (r["defence"]["kind"] != "none", r["defence"]["kind"],
                                                      r["defence"]["spec"]))
        rads = sorted({k for r in rows for k in ((r.get("clean") or {}).get("rad") or {})}, key=float)
        for rad in rads:
            lines += [f"### {name}, RAD {rad}%", "", t["intro"].format(n=rows[0]["data"]["n"], rad=rad), "",
                      "| " + DEFENCES_COLUMNS + " |", "|" + "---|" * len(DEFENCES_COLUMNS.split(" | "))]
            lines += ["| " + " | ".join(_defence_cells(r, rad)) + " |" for r in rows]
            lines.append("")
        fp = [r for r in rows if (r.get("detector") or {}).get("false_positive_rate")]
        if fp:
            lines.append("Detectors' false-positive rates on clean test traffic (thresholds set for 1% / 5% on other "
                         "clean test images): " + "; ".join(
                             f"{r['defence']['spec']} {_dpct(r['detector']['false_positive_rate'].get('0.01'))} / "
                             f"{_dpct(r['detector']['false_positive_rate'].get('0.05'))} (adaptive weight "
                             f"{r['detector'].get('weight'):g})" for r in fp) + ".")
            lines.append("")
        mon = [r for r in rows if r.get("monitor_watch")]
        if mon:
            lines.append("Stream monitors' false-alarm rates on clean test traffic (calibrated for 1% on other clean "
                         "test images): " + "; ".join(
                             f"{r['defence']['spec']} " + ", ".join(
                                 f"{_dpct(m.get('false_alarm_rate'))} at RAD {k}%"
                                 for k, m in sorted(r["monitor"].items(), key=lambda kv: float(kv[0])))
                             for r in mon) + ".")
            lines.append("")
    lines += defences_reading(records)
    if figure:
        lines += [f"![efficacy reduction per defence, non-adaptive vs adaptive]({figure})", ""]
    return lines


def _span(values: Sequence[float]) -> str:
    lo, hi = min(values) * 100, max(values) * 100
    return f"{lo:.0f}%" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}%"


def defences_reading(records: Sequence[Record], rad: str = "5") -> List[str]:
    """A short reading of the defence tables, computed from the records: which defences hold the adaptive
    per-sample attack below half of what it does to the undefended model on every model run, which do not,
    and what each costs in clean accuracy."""
    by_model: Dict[str, Dict[str, Record]] = {}
    for r in records:
        by_model.setdefault(r["model"]["name"], {})[r["defence"]["spec"]] = r
    bare = {m: sample_reduction(rows["none"], rad, "non_adaptive") for m, rows in by_model.items() if "none" in rows}
    bare = {m: v for m, v in bare.items() if v is not None}
    specs = [s for s in dict.fromkeys(s for rows in by_model.values() for s in rows) if s != "none"]
    held, broken, costs = [], [], []
    for spec in specs:
        vals = {m: sample_reduction(rows[spec], rad, "adaptive") for m, rows in by_model.items()
                if spec in rows and m in bare}
        vals = {m: v for m, v in vals.items() if v is not None}
        if not vals:
            continue
        kind = next(by_model[m][spec]["defence"]["kind"] for m in vals)
        naive = [v for m in vals if (v := sample_reduction(by_model[m][spec], rad, "non_adaptive")) is not None]

        def detected(side: str) -> List[float]:
            return [d for m in vals if (d := detection_rate(by_model[m][spec], side)) is not None]

        text = f"{spec} ({_span(list(vals.values()))}"
        if kind == "monitor":
            text += ": the most an attacker gets while staying below its alarm)"
        elif kind == "detector" and detected("adaptive"):
            text += (f", its attacked inputs still detected {_span(detected('adaptive'))} at 5% false positives"
                     + (f", the non-adaptive ones {_span(detected('non_adaptive'))})" if detected("non_adaptive")
                        else ")"))
        else:
            text += f", non-adaptive {_span(naive)})" if naive and _span(naive) != _span(list(vals.values())) else ")"
        (held if all(v < bare[m] / 2 for m, v in vals.items()) else broken).append(text)
        drops = [by_model[m]["none"]["clean"]["rad"][rad]["accuracy"] - acc for m in vals
                 if (acc := (((by_model[m][spec].get("clean") or {}).get("rad") or {}).get(rad) or {})
                     .get("accuracy")) is not None]
        if drops and max(drops) >= 0.005:
            costs.append(f"{spec} {max(drops) * 100:.1f} points")
    if not bare or not (held or broken):
        return []
    models = len(bare)
    out = [f"**Reading** (RAD {rad}%, per-sample DeepSloth l_inf, {models} model{'s' if models > 1 else ''}): "
           f"undefended, it cuts efficacy by {_span(list(bare.values()))}. "
           + (f"Against the adaptive attacker these defences keep it below half of that on every model: "
              f"{'; '.join(held)}. " if held else "No defence keeps the adaptive attack below half of that. ")
           + (f"These do not: {'; '.join(broken)}. " if broken else "")
           + (f"Clean early-exit accuracy lost (the deployed model's, at the same RAD), at most: "
              f"{'; '.join(costs)}; the others cost under half a point."
              if costs else "No defence costs half a point of clean early-exit accuracy."), ""]
    return out


STUDIES = ("headline", "budget", "precision", "transfer", "defence", "defences")


def unique(results: Sequence[Record]) -> List[Record]:
    """`results` without copies: records saved under the same file name (`<cell>-<ckey12>.json`, the key of
    the inputs and of the evaluation settings) in several folders count once, the newest."""
    keep: Dict[Any, Record] = {}
    for r in results:
        k = Path(r["_file"]).name if r.get("_file") else id(r)
        if k not in keep or (r.get("created") or "") > (keep[k].get("created") or ""):
            keep[k] = r
    kept = {id(r) for r in keep.values()}
    return [r for r in results if id(r) in kept]


def render_studies(results: Sequence[Record], *, tables: Optional[str] = None,
                   figure: Optional[str] = None, defences: Sequence[Record] = (),
                   defences_figure: Optional[str] = None) -> Dict[str, List[str]]:
    """study name -> Markdown lines, for each study found among `results` (see the module's doc), in
    STUDIES order. `tables` / `figure`: a link to the grid tables and the EEC figure's path, if written.
    `defences`: the defence study's records (`deepsloth defend`), `defences_figure` its figure."""
    results = unique(results)
    rest = [r for r in results if "transfer" not in r]
    checks = [r for r in rest if is_budget_check(r)]
    grid = [r for r in rest if not is_budget_check(r)]
    models = group_by_model(rest) if rest else {}
    plain = {n: c for n, c in (group_by_model(grid) if grid else {}).items() if not _adversarial(c)}
    shape = headline(plain)
    found = {
        "headline": ["## The paper's headline shape", ""] + shape + [""] + uap_note(plain) if shape else [],
        "budget": budget_section(checks, grid),
        "precision": precision_section(rest),
        "transfer": transfer_section(results, tables=tables, figure=figure),
        "defence": defence_section(models, tables=tables) if any(_adversarial(c) for c in models.values()) else [],
        "defences": defences_section(defences, figure=defences_figure),
    }
    return {k: v for k, v in found.items() if v}


def write_studies(results: Sequence[Record], out: Path | str, *, tables: Optional[str] = None,
                  figure: Optional[str] = None, defences: Sequence[Record] = (),
                  defences_figure: Optional[str] = None) -> Dict[str, str]:
    """Write <study>.md into `out` for each study `render_studies` finds; returns study -> path."""
    out = Path(out)
    written = {}
    for name, lines in render_studies(results, tables=tables, figure=figure, defences=defences,
                                      defences_figure=defences_figure).items():
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}.md"
        with atomic_path(path, suffix=".md") as tmp:
            Path(tmp).write_text("\n".join(lines))
        written[name] = str(path)
    return written


__all__ = ["DEFENCES_TEXT", "defences_section", "is_defence_record", "ATTACK_COLUMNS", "TRANSFER_TEXT", "DEFENCE_TEXT", "BUDGET_TEXT", "BUDGET_CELLS", "PRECISION_TEXT",
           "TINY_TEXT", "STUDIES", "attack_columns", "model_rows", "headline", "uap_note", "transfer_section",
           "defence_section", "defence_shape", "is_budget_check", "budget_section", "precision_of",
           "precision_section", "tiny_section", "unique", "render_studies", "write_studies"]
