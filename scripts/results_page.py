"""Regenerate docs/results.md from the saved result files under docs/results/ (never recomputes).

    python scripts/results_page.py                      # tables, CSV, figure and page from docs/results/
    python scripts/results_page.py --collect runs/grid  # first copy new comparison files from a grid run
    python scripts/results_page.py --collect-transfer runs/transfer   # and transfer records (`deepsloth transfer`)
    python scripts/results_page.py --collect-defence runs/defence     # and the adversarial-training grid cells
    python scripts/results_page.py --collect-defend runs/defend       # and the defence study (`deepsloth defend`)
    python scripts/results_page.py --collect-budget runs/probe        # and the budget checks (l_2 / l_1)
    python scripts/results_page.py --collect-precision runs/amp-check # and the fp32 / bf16 precision check
    python scripts/results_page.py --sweep resnet56_sdn_cifar10 ...   # first save clean sweeps (computes)

Saved inputs: docs/results/grid/<model>/<cell>-<key>.json (comparison records written by
`deepsloth grid`; the crafted tensors stay in the run folder), docs/results/transfer/**.json (transfer
records written by `deepsloth transfer`, its scenarios included) and docs/results/sweeps/<model>.json
(`deepsloth zoo sweep --json`).

Every table comes from the library (`deepsloth.experiments.report` for the grid, `deepsloth.experiments.studies`
for the other studies, the same code `deepsloth report` runs); this script keeps this repository's bookkeeping
(collecting, the queue's order, stale records) and the page: its layout and the texts saying how its runs were made.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
sys.path.insert(0, str(ROOT / "src"))

from deepsloth.experiments import studies  # noqa: E402
from deepsloth.experiments.report import group_by_model, load_results, write_report  # noqa: E402
from deepsloth.experiments.grid import ALL_CELLS  # noqa: E402
from deepsloth.experiments.zoo import PAPER_VGG16BN_SWEEP  # noqa: E402
from deepsloth.precision import native_bf16  # noqa: E402


def portable(obj):
    """A record without the paths of the machine that made it: an absolute `path` or `file` becomes the zoo
    model's folder inside the package (`deepsloth/zoo/<name>`) or the file's own name."""
    if isinstance(obj, list):
        return [portable(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        if k in ("path", "file") and isinstance(v, str) and v.startswith("/"):
            parts = Path(v).parts
            zoo = [i for i in range(1, len(parts) - 1) if parts[i - 1:i + 1] == ("deepsloth", "zoo")]
            v = "/".join(parts[zoo[-1] - 1:]) if zoo else parts[-1]
        out[k] = portable(v)
    return out


def copy_record(src: Path, dest: Path) -> bool:
    """Write `src`'s record to `dest` in portable form; whether `dest` changed."""
    text = json.dumps(portable(json.loads(src.read_text())), indent=2) + "\n"
    if dest.is_file() and dest.read_text() == text:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return True


def collect(run_dir: Path, into: str = "grid") -> int:
    """Copy comparison records (not the crafted tensors; `portable`) from a run folder into docs/results/<into>, leaving
    out records made on a zoo model's earlier weights (a run folder keeps them; --prune-stale would only
    delete them again)."""
    n = 0
    for rec in load_results(run_dir):
        if is_stale(rec):
            continue
        src = Path(rec["_file"])
        n += copy_record(src, RESULTS / into / src.relative_to(run_dir))
    return n


def collect_defend(run_dir: Path) -> int:
    """Copy the defence study's records (`deepsloth defend`, not its crafted tensors or detectors) into
    docs/results/defend."""
    from deepsloth.experiments.defend import load_records
    n = 0
    for src in sorted(Path(run_dir).rglob("defence-*.json")):
        if "adversarial" in src.parts or not load_records(src):
            continue
        n += copy_record(src, RESULTS / "defend" / src.relative_to(run_dir))
    return n


def defend_section() -> list:
    """The defence study: every defence against the non-adaptive and the adaptive attacker, with its figure."""
    from deepsloth.experiments.defend import load_records
    from deepsloth.experiments.figures import plot_defences
    folder = RESULTS / "defend"
    recs = load_records(folder) if folder.is_dir() else []
    if not recs:
        return []
    plot_defences(recs, folder / "defences.png")
    from deepsloth.defences import parse_defence
    from deepsloth.experiments.defend import DEFAULT_DEFENCES
    done = {(r["model"]["name"], r["defence"]["spec"]) for r in recs}
    missing = {m: [d for d in DEFAULT_DEFENCES if (m, parse_defence(d).spec) not in done] for m in SHIPPED}
    note = ["Defences not run yet (the `defend` step of `scripts/train_queue.sh`): " + "; ".join(
        f"{m}: {', '.join(ds)}" for m, ds in missing.items() if ds), ""] if any(missing.values()) else []
    return studies.defences_section(recs, DEFEND_TEXT, figure="results/defend/defences.png") + note


def save_sweep(model: str) -> Path:
    from deepsloth.experiments.zoo import clean_sweep
    r = clean_sweep(model)
    path = RESULTS / "sweeps" / f"{r['model']['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1))
    return path


def sweeps_section() -> list:
    files = sorted((RESULTS / "sweeps").glob("*.json"))
    if not files:
        return []
    out = ["## Clean threshold sweeps next to the paper's VGG16-BN", "",
           "Early-exit accuracy (%) / cost (= 1 - efficacy) per threshold q on the full CIFAR-10 test set (JPEG copy), "
           "regenerated with `deepsloth zoo sweep NAME --json`. The paper's column is its VGG16-BN IC-only SDN "
           "(docs/method.md §8.2).", ""]
    sweeps = [json.loads(f.read_text()) for f in files]
    header = "| q | " + " | ".join(f"{s['model']['name']} (final {s['final_accuracy'] * 100:.2f}%)" for s in sweeps) + \
        " | paper VGG16-BN (final 92.45%) |"
    out += [header, "|" + "---|" * (len(sweeps) + 2)]
    for i, row in enumerate(sweeps[0]["rows"]):
        q = row["q"]
        cells = [f"{s['rows'][i]['accuracy'] * 100:.2f} / {s['rows'][i]['cost']:.4f}" for s in sweeps]
        p = PAPER_VGG16BN_SWEEP.get(round(q, 2))
        out.append(f"| {q:.2f} | " + " | ".join(cells) + f" | {p[0]:.2f} / {p[1]:.4f} |")
    out.append("")
    out += [f"- {s['model']['name']}: thresholds " + ", ".join(f"RAD {k}%: q = {v:.2f}" for k, v in s["thresholds"].items())
            for s in sweeps]
    out.append("")
    return out


# This page's own texts for the library's sections (deepsloth.experiments.studies): how its runs were made.
TRANSFER_TEXT = {
    "intro": studies.TRANSFER_TEXT["intro"] + " Collected with `python scripts/results_page.py --collect-transfer "
                                              "runs/transfer`.",
    "cross": "### Cross-architecture (the shipped SDNs, the MSDNet and the early-exit ViT)",
    "scenario1": "### Scenario 1: surrogates trained on a share of the victim's training data\n\n"
                 "Victim: {victim} (final accuracy {victim_accuracy}%). Surrogates: {arch} SDNs (CNN then IC-only, "
                 "fast one-cycle CPU recipe; epochs in the table) on a seeded per-class share of CIFAR-10's training "
                 "split; accuracy on the full test set; training time on 2 CPU cores shared with other work.",
    "scenario2": "### Scenario 2: surrogates trained on other classes\n\n"
                 "Victim and surrogates: {arch} SDNs on c CIFAR-10 classes (fast CPU recipe), the surrogate sharing "
                 "`shared` of the victim's classes (seeded rule of `experiments.transfer.scenario2_subsets`: one "
                 "victim per c). Accuracies on the models' own test classes; the attacks run on the victim's test "
                 "images.",
}
DEFENCE_TEXT = {
    "intro": "Per model: clean final-exit accuracy and efficacy, efficacy under per-sample and universal DeepSloth "
             "(l_inf, eps 8/255) with its reduction, and final-exit accuracy under PGD (l_inf, eps 8/255), at RAD 5% "
             "(thresholds calibrated on each model's own clean images). Collected with "
             "`python scripts/results_page.py --collect-defence runs/defence`; the runs are the `defence` step of "
             "`scripts/train_queue.sh`.",
    "note": "Our budget is smaller than the paper's: a fast single-step PGD-AT backbone (4 epochs warm-started from "
            "the shipped CNN) and IC terms from 3-step attacks on 30% of the training data for 2 epochs, where the "
            "paper uses 10-step PGD throughout.",
}
PRECISION_TEXT = {
    "intro": "Some grid cells were crafted in fp32 and others under bf16 autocast (docs/method.md §3.7; the tables "
             "label them). These cells were crafted again in the other precision, on the same 1,000 images with the "
             "same seed, to see how far the precision moves the numbers; each pair reads fp32 / bf16. The runs: "
             "`deepsloth grid --model resnet56_sdn_cifar10 --n 1000 --out runs/amp-check --attacks clean "
             "pgd-linf-sample deepsloth-linf-universal deepsloth-linf-sample --amp bf16`, collected with "
             "`python scripts/results_page.py --collect-precision runs/amp-check`.",
}
TINY_TEXT = {
    "heading": "## Tiny ImageNet (shared subset: 100 training images per class)",
    "intro": "Short CPU recipe (`deepsloth zoo train ARCH --dataset tinyimagenet --recipe fast --epochs 4 "
             "--ic-epochs 1`); with 100 images per class the accuracy is low, as expected. Efficacy at RAD 5%. "
             "Collected with `python scripts/results_page.py --collect-tiny runs/tiny-grid`; full tables: "
             "[tiny/tables.md](results/tiny/tables.md).",
    "columns": "final acc. (10,000 val images) | training (CPU min, CNN + ICs)",
}
BUDGET_NOTE = ("**{name}**: at matched budgets {kind} DeepSloth in l_2 / l_1 cuts the efficacy at RAD 5% by {l2}% / "
               "{l1}% (default budgets: {l2_default}% / {l1_default}%; l_inf: {linf}%). The weak l_2 / l_1 rows of the "
               "grid come from the budgets, not from the attack.")
BUDGET_CHECKS = {   # scope: (this page's intro, the queue steps that ran the matched-budget runs)
    "universal": ("The grid's universal l_2 and l_1 cells use the per-sample budgets of docs/method.md §5.3 (l_2 "
                  "ending at 0.35, l_1 at 8), far below what the l_inf universal perturbation spends in those norms "
                  "(l_2 1.66, l_1 90). Here the same schedules run with budgets matched to it (everything else "
                  "default; first 1,000 test images).", ("budget",)),
    "sample": ("Per-sample DeepSloth at its default l_2 / l_1 budgets (l_2 ending at 0.35, l_1 8) is well short of "
               "its l_inf result, because the l_inf ball lets it spend far more: l_2 1.28-1.30 and l_1 63-65 on "
               "average on each of the three SDNs. Here the same schedules run with budgets matched to that (l_2 "
               "starting at 3.67, so that ten decays of 0.9 end at 1.28; l_1 63; everything else default) on the "
               "first 500 test images, "
               "with the thresholds calibrated on the grid's 1,000.",
               ("budget-sample", "budget-sample-vgg", "budget-sample-resnet")),
}
BUDGET_TEXT = {"tag": " **matched budget**", "sample_note": BUDGET_NOTE,
               "universal_note": BUDGET_NOTE + " The l_1 perturbation puts its budget on few pixels (see its l_inf), "
                                               "which also costs final-exit accuracy.",
               **{scope: intro + " The runs are the " + " / ".join(f"`{s}`" for s in steps)
                  + f" step{'s' if len(steps) > 1 else ''} of `scripts/train_queue.sh`."
                  for scope, (intro, steps) in BUDGET_CHECKS.items()}}


def _saved(name: str) -> list:
    """The comparison records saved under docs/results/<name> (none when it does not exist)."""
    return load_results(RESULTS / name) if (RESULTS / name).is_dir() else []


def _with_tables(name: str) -> list:
    """The records of docs/results/<name>, after writing its full tables (Markdown, CSV) and EEC figure."""
    recs = _saved(name)
    if recs:
        write_report(RESULTS / name, RESULTS / name, formats=("md", "csv"), results=recs)
    return recs


DEFEND_TEXT = {
    "intro": studies.DEFENCES_TEXT["intro"] + " The runs are the `defend` step of `scripts/train_queue.sh` "
             "(`deepsloth defend --model M --n 500`, the ResNet-56 SDN's attacks under bf16 autocast where the CPU "
             "has it natively), collected with `python scripts/results_page.py --collect-defend runs/defend`.",
}


def transfer_section() -> list:
    """Black-box transfer tables (docs/method.md §10.2) from saved transfer records."""
    recs = _saved("transfer")
    if not any("transfer" in r for r in recs):
        return []
    return studies.transfer_section(_with_tables("transfer"), TRANSFER_TEXT, figure="results/transfer/eec_grid.png",
                                    tables="[transfer/tables.md](results/transfer/tables.md)")


def tiny_section() -> list:
    """Tiny ImageNet subset models (64x64, 200 classes): accuracy, training time and their grid cells."""
    return studies.tiny_section(group_by_model(_with_tables("tiny")), TINY_TEXT) if _saved("tiny") else []


def budget_section() -> list:
    """DeepSloth in l_2 / l_1 at budgets matched to what its l_inf version spends in that norm, universal and
    per-sample (records under docs/results/budget/<model>/), next to the grid's default-budget cells."""
    return studies.budget_section(_saved("budget"), _saved("grid"), BUDGET_TEXT)


def precision_section() -> list:
    """Grid cells crafted again in the other precision (records under docs/results/precision/<model>/), each
    beside the grid's own cell: how far bf16 autocast moves the numbers."""
    return studies.precision_section(_saved("precision"), _saved("grid"), PRECISION_TEXT)


def defence_section() -> list:
    """Adversarial training against slowdown (docs/method.md §10.3): one row per model."""
    if not _saved("defence"):
        return []
    return studies.defence_section(group_by_model(_with_tables("defence")), DEFENCE_TEXT,
                                   tables="[defence/tables.md](results/defence/tables.md)")


CHEAP = ("clean", "pgd-linf-sample", "pgd-avg-linf-sample", "deepsloth-linf-sample", "deepsloth-linf-universal",
         "deepsloth-linf-class", "deepsloth-l1-universal", "deepsloth-l2-universal")
SHIPPED = ("resnet56_sdn_cifar10", "mobilenet_sdn_cifar10")
MSDNET = "msdnet_cifar10"
VGG = "vgg16bn_sdn_cifar10"   # its grid is run by the vgg-grid step
# the queue's order for a model's grid (scripts/train_queue.sh): the cheap cells, then the per-sample l_1 / l_2
# ones (the headline's other norms), then the rest; on the MobileNet the last six took 30 (l_1 sample), 33 (PGD-max),
# 66 (l_2 sample), 47 (l_1 class) and 94 (UAP) CPU minutes
QUEUE_ORDER = CHEAP + ("deepsloth-l1-sample", "pgd-max-linf-sample", "deepsloth-l2-sample", "deepsloth-l1-class",
                       "uap-linf-universal", "deepsloth-l2-class")


# the grid on the model families beyond the three SDNs (MSDNet, the early-exit ViT): every l_inf cell and per-sample
# DeepSloth in l_2 / l_1, cheapest first (the universal and class-universal l_2 / l_1 cells are left out: CPU budget)
FAMILY_CELLS = ("clean", "pgd-linf-sample", "pgd-avg-linf-sample", "deepsloth-linf-sample", "deepsloth-linf-universal",
                "deepsloth-linf-class", "uap-linf-universal", "pgd-max-linf-sample", "deepsloth-l1-sample",
                "deepsloth-l2-sample")
VIT = "vit_cifar10"
FAMILIES = (MSDNET, VIT)


def planned_cells(model: str) -> tuple:
    """The grid cells the queue runs on `model`, in its order."""
    return FAMILY_CELLS if model in FAMILIES else QUEUE_ORDER


def defended(model: str) -> bool:
    """Whether the defence study's records (the undefended row and every default defence) are saved for `model`."""
    from deepsloth.defences import parse_defence
    from deepsloth.experiments.defend import DEFAULT_DEFENCES, current, slug
    names = ["defence-none.json"] + [f"defence-{slug(parse_defence(d).spec)}.json" for d in DEFAULT_DEFENCES]
    paths = [RESULTS / "defend" / model / n for n in names]
    return all(p.is_file() and current(json.loads(p.read_text())) for p in paths)


@functools.lru_cache(maxsize=None)
def shipped_weights(name: str):
    """The weights hash of the zoo model `name` as shipped now (None for a model the zoo does not ship)."""
    from deepsloth.exits.calibrate import weights_sha256
    d = ROOT / "src" / "deepsloth" / "zoo" / name
    return weights_sha256(d) if (d / "model.json").is_file() else None


def is_stale(rec: dict) -> bool:
    """A record made on a zoo model's earlier weights (the model was retrained and reinstalled since)."""
    now = shipped_weights(rec["model"]["name"])
    return now is not None and rec["model"].get("weights_sha256") != now


def prune_stale() -> list:
    """Delete the grid records made on a zoo model's earlier weights (git history keeps them)."""
    gone = [Path(r["_file"]) for r in load_results(RESULTS / "grid") if is_stale(r)] \
        if (RESULTS / "grid").is_dir() else []
    for f in gone:
        f.unlink()
    return gone


def saved_cells(folder: Path) -> set:
    """The cells of the comparison records saved in `folder` (none when it does not exist), leaving out
    records made on a zoo model's earlier weights."""
    return {r["cell"] for r in load_results(folder) if not is_stale(r)} if folder.is_dir() else set()


def missing_cells(done: set, order: Sequence[str] = QUEUE_ORDER) -> list:
    """The grid cells not in `done`, in `order` (the queue's, or the library's ALL_CELLS)."""
    return [c for c in order if c not in done]


def todo() -> list:
    """The queue steps (scripts/train_queue.sh) whose results are not saved under docs/results/ yet."""
    tr = load_results(RESULTS / "transfer") if (RESULTS / "transfer").is_dir() else []
    scen = lambda name: {(r["scenario"].get("fraction_percent"), r["scenario"].get("shared"))   # noqa: E731
                         for r in tr if (r.get("scenario") or {}).get("name") == name}
    vgg = ROOT / "src" / "deepsloth" / "zoo" / "vgg16bn_sdn_cifar10" / "model.json"   # done once at 90%
    all_cells = {"clean", *ALL_CELLS}
    # a budget check's two matched-budget runs (l_2, l_1) saved for one model
    matched = lambda name, scope="sample": ({f"deepsloth-l2-{scope}", f"deepsloth-l1-{scope}"}   # noqa: E731
                                            <= saved_cells(RESULTS / "budget" / name))
    family_done = lambda name: (set(FAMILY_CELLS) <= saved_cells(RESULTS / "grid" / name)   # noqa: E731
                                and (RESULTS / "sweeps" / f"{name}.json").is_file())
    family_transfers = lambda name: len([r for r in tr if "scenario" not in r and "transfer" in r and name in   # noqa
                                         (r["transfer"]["surrogate"]["name"], r["transfer"]["victim"]["name"])])
    steps = {
        "transfer": len([r for r in tr if "scenario" not in r]) >= 4,
        "scenario2": len(scen("scenario2")) >= 3,
        "scenario1": len(scen("scenario1")) >= 4,
        "represent": (RESULTS / "represent" / "represent.json").is_file() and
        json.loads((RESULTS / "represent" / "represent.json").read_text())["data"]["n"] >= 500,
        "grid-cheap": all(set(CHEAP) <= saved_cells(RESULTS / "grid" / m) for m in SHIPPED),
        "vgg": vgg.is_file() and json.loads(vgg.read_text())["accuracy"]["final"] >= 0.90,
        "tiny": all({"clean", "pgd-linf-sample", "deepsloth-linf-sample", "deepsloth-linf-universal"}
                    <= saved_cells(RESULTS / "tiny" / f"{a}-sdn") for a in ("mobilenet", "resnet56")),
        "defence": len(group_by_model(load_results(RESULTS / "defence"))) >= 7 if (RESULTS / "defence").is_dir()
        else False,
        # why per-sample DeepSloth in l_2 / l_1 falls short of l_inf: matched budgets (about 50 CPU min)
        "budget-sample": matched(SHIPPED[1]),
        # the VGG16-BN grid before the shipped models' expensive cells: its cells are the cheapest per step (bf16
        # VGG16-BN crafts about 5x faster than fp32 ResNet-56) and each one is saved as it finishes
        "vgg-grid": all_cells <= saved_cells(RESULTS / "grid" / VGG),
        "grid-expensive": all(all_cells <= saved_cells(RESULTS / "grid" / m) for m in SHIPPED),
        # the same check on the VGG16-BN SDN (about 60 CPU min under bf16), after the shipped models' grid: it
        # explains a result, the grid's cells are what the headline is checked on
        "budget-sample-vgg": matched(VGG),
        # and on the ResNet-56 SDN, whose per-sample l_1 cell (87.9%) also falls short of 90% (about 30 CPU min)
        "budget-sample-resnet": matched(SHIPPED[0]),
        "budget": matched(SHIPPED[1], "universal"),
        # MSDNet: its zoo model (joint training), then its grid and clean sweep, then transfer to and from the
        # ResNet-56 SDN
        "msdnet": (ROOT / "src" / "deepsloth" / "zoo" / MSDNET / "model.json").is_file(),
        "msdnet-grid": family_done(MSDNET),
        # the defence study on both shipped models (docs/defences.md)
        "defend": all(defended(m) for m in SHIPPED),
        # the early-exit ViT: its zoo model (about 11 CPU min per epoch)
        "vit": (ROOT / "src" / "deepsloth" / "zoo" / "vit_cifar10" / "model.json").is_file(),
        "msdnet-transfer": family_transfers(MSDNET) >= 4,
        # the ViT's grid and clean sweep, then transfer to and from the ResNet-56 SDN
        "vit-grid": family_done(VIT),
        "vit-transfer": family_transfers(VIT) >= 4,
    }
    order = list(steps)
    order.remove("defend")   # after the MSDNet grid, before its transfer and the ViT
    order.insert(order.index("msdnet-grid") + 1, "defend")
    if not native_bf16("cpu"):
        # without native bf16 (an AVX2-only CPU) the VGG16-BN steps run in fp32, over twice as long (a CNN
        # stage no longer fits one sitting); the shipped models' fp32 cells lose nothing there, so they go first
        order.remove("grid-expensive")
        order.insert(order.index("vgg"), "grid-expensive")
    return [k for k in order if not steps[k]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--collect", type=Path, default=None, help="copy comparison files from this grid run folder first")
    ap.add_argument("--collect-transfer", type=Path, default=None,
                    help="copy transfer records from this `deepsloth transfer --out` folder first")
    ap.add_argument("--collect-defence", type=Path, default=None,
                    help="copy comparison files from the defence study's grid folder first")
    ap.add_argument("--collect-defend", type=Path, default=None,
                    help="copy the defence study's records from this `deepsloth defend` output folder first")
    ap.add_argument("--collect-tiny", type=Path, default=None,
                    help="copy comparison files from the Tiny ImageNet grid folder first")
    ap.add_argument("--collect-budget", type=Path, default=None,
                    help="copy comparison files of the universal-budget check (runs/probe) first")
    ap.add_argument("--collect-precision", type=Path, default=None,
                    help="copy comparison files of the fp32 / bf16 precision check (runs/amp-check) first")
    ap.add_argument("--todo", action="store_true", help="only print the queue steps whose results are not saved yet")
    ap.add_argument("--missing", default=None, metavar="MODEL",
                    help="only print MODEL's grid cells not saved yet, in the queue's order")
    ap.add_argument("--sweep", nargs="*", default=[], help="compute and save clean sweeps of these models first")
    ap.add_argument("--prune-stale", action="store_true",
                    help="first delete grid records made on a zoo model's earlier weights (after a reinstall)")
    args = ap.parse_args()
    if args.todo:
        print("\n".join(todo()))
        return
    if args.missing:
        print("\n".join(missing_cells(saved_cells(RESULTS / "grid" / args.missing), planned_cells(args.missing))))
        return
    if args.prune_stale:
        gone = prune_stale()
        print(f"deleted {len(gone)} stale grid records" + "".join(f"\n  {f.relative_to(ROOT)}" for f in gone))
    if args.collect:
        print(f"collected {collect(args.collect)} new or changed comparison files")
    if args.collect_transfer:
        print(f"collected {collect(args.collect_transfer, 'transfer')} new or changed transfer records and "
              "white-box cells")
    if args.collect_tiny:
        print(f"collected {collect(args.collect_tiny, 'tiny')} new or changed Tiny ImageNet comparison files")
    if args.collect_defence:
        print(f"collected {collect(args.collect_defence, 'defence')} new or changed defence comparison files")
    if args.collect_defend:
        print(f"collected {collect_defend(args.collect_defend)} new or changed defence-study records")
    if args.collect_precision:
        print(f"collected {collect(args.collect_precision, 'precision')} new or changed precision-check files")
    if args.collect_budget:
        print(f"collected {collect(args.collect_budget, 'budget')} new or changed budget-check comparison files")
    for m in args.sweep:
        print(f"saved {save_sweep(m)}")
    lines = ["# Results", "",
             "Every table and figure here is regenerated from the saved result files under `docs/results/` by "
             "`python scripts/results_page.py` (nothing is recomputed). The runs behind them: "
             "`bash scripts/train_queue.sh` (attack grid with `deepsloth grid`, zoo training), CPU only, "
             "CIFAR-10 JPEG copy (docs/method.md §1.3).", ""]
    grid = RESULTS / "grid"
    if grid.is_dir() and load_results(grid):
        write_report(grid, grid, formats=("md", "tex", "csv"))
        models = group_by_model(load_results(grid))
        lines += ["## Attack grid", "",
                  "First 1,000 CIFAR-10 test images, default hyper-parameters of docs/method.md §5, seed 0, thresholds "
                  "calibrated on the same clean images. Columns: final-exit accuracy; per RAD budget the early-exit "
                  "accuracy, efficacy, efficacy reduction vs. clean and expected IoT latency amplification "
                  "(docs/method.md §6). CSV: [grid/tables.csv](results/grid/tables.csv); LaTeX: "
                  "[grid/tables.tex](results/grid/tables.tex).", "",
                  (grid / "tables.md").read_text(), "One row per model at RAD 5% (`deepsloth report`'s summary):", "",
                  (grid / "summary.md").read_text(), "![EEC curves](results/grid/eec_grid.png)", "",
                  "### The paper's headline shape", ""] + studies.headline(models) + [""] + studies.uap_note(models)
        # the queue runs every cell on the three SDNs, FAMILY_CELLS on the other families (their universal and
        # class-universal l_2 / l_1 cells are left out of the CPU budget)
        planned = {n: list(FAMILY_CELLS) for n in FAMILIES}
        missing = {name: missing_cells(saved_cells(grid / name), planned.get(name, ["clean", *ALL_CELLS]))
                   for name in sorted(set(models) | {*SHIPPED, VGG})}
        if any(missing.values()):
            lines += ["Cells not run yet (queued in `scripts/train_queue.sh`): " + "; ".join(
                f"{n}: {', '.join(c)}" for n, c in missing.items() if c), ""]
        skipped = {n: missing_cells(saved_cells(grid / n), [c for c in ALL_CELLS if c not in cells])
                   for n, cells in planned.items() if n in models}   # beyond the plan: unless run after all
        if any(skipped.values()):
            lines += ["Not run, to stay within the CPU budget: " + "; ".join(
                f"{n}: {', '.join(c)}" for n, c in skipped.items() if c) + ".", ""]
    lines += budget_section()
    lines += precision_section()
    lines += transfer_section()
    lines += defence_section()
    lines += defend_section()
    lines += tiny_section()
    lines += sweeps_section()
    rep = RESULTS / "represent" / "represent.json"
    if rep.is_file():
        r = json.loads(rep.read_text())
        ex = r["exits"]
        lines += ["## Internal representations", "",
                  f"`deepsloth represent --model {r['model']['name']} --class {r['class']} --n {r['data']['n']}` "
                  f"({r['class_name']}): median max-softmax at exits 1 / {len(ex) // 2} / {len(ex)}: "
                  + "; ".join(f"{s} " + " / ".join(f"{ex[i][s]['max_softmax']['median']:.2f}"
                                                   for i in (0, len(ex) // 2 - 1, len(ex) - 1))
                              for s in ("clean", "PGD", "DeepSloth"))
                  + ". DeepSloth inputs stay near uniform at every exit; PGD inputs become confident (in a wrong "
                  "class) in the later exits.", "",
                  "![summary](results/represent/summary.png)", "", "![images](results/represent/images.png)", "",
                  "![exit 20](results/represent/exit-20.png)", ""]
    (ROOT / "docs" / "results.md").write_text("\n".join(lines))
    print(f"wrote {ROOT / 'docs' / 'results.md'}")


if __name__ == "__main__":
    main()
