"""scripts/results_page.py: stale records, the queue order, and each section as committed."""
import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _page():
    spec = importlib.util.spec_from_file_location("results_page", ROOT / "scripts" / "results_page.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _record(name, sha, cell="clean"):
    return {"format": "deepsloth-comparison/1", "cell": cell, "model": {"name": name, "weights_sha256": sha}}


def test_stale_records_are_left_out_and_pruned(tmp_path, monkeypatch):
    page = _page()
    from deepsloth.exits.calibrate import weights_sha256
    name = "resnet56_sdn_cifar10"
    now = weights_sha256(ROOT / "src" / "deepsloth" / "zoo" / name)
    assert page.shipped_weights(name) == now
    assert not page.is_stale(_record(name, now))
    assert page.is_stale(_record(name, "0" * 64))
    assert not page.is_stale(_record("my_own_model", "0" * 64))   # not a zoo model: never stale
    # a results folder with one current and one stale cell
    grid = tmp_path / "grid" / name
    grid.mkdir(parents=True)
    monkeypatch.setattr(page, "RESULTS", tmp_path)
    monkeypatch.setattr(page, "load_results", lambda folder: [
        dict(json.loads(f.read_text()), _file=str(f)) for f in sorted(Path(folder).rglob("*.json"))])
    (grid / "clean-a.json").write_text(json.dumps(_record(name, now)))
    (grid / "pgd-linf-sample-b.json").write_text(json.dumps(_record(name, "0" * 64, "pgd-linf-sample")))
    assert page.saved_cells(grid) == {"clean"}
    assert "pgd-linf-sample" in page.missing_cells(page.saved_cells(grid))
    gone = page.prune_stale()
    assert [f.name for f in gone] == ["pgd-linf-sample-b.json"]
    assert sorted(f.name for f in grid.iterdir()) == ["clean-a.json"]
    # collecting a run folder that still holds the stale record does not bring it back
    run = tmp_path / "run" / name
    run.mkdir(parents=True)
    (run / "clean-c.json").write_text(json.dumps(_record(name, now)))
    (run / "pgd-linf-sample-b.json").write_text(json.dumps(_record(name, "0" * 64, "pgd-linf-sample")))
    assert page.collect(tmp_path / "run") == 1
    assert sorted(f.name for f in grid.iterdir()) == ["clean-a.json", "clean-c.json"]


def test_todo_puts_the_fp32_cells_first_without_native_bf16(monkeypatch):
    """The queue's order follows the machine: with native bf16 the VGG16-BN steps (bf16 there) come first,
    without it the shipped models' fp32 cells do (the VGG16-BN would run in fp32, over twice as long)."""
    page = _page()
    # the saved results decide which steps are left; keep the three whose order depends on the machine
    monkeypatch.setattr(page, "saved_cells", lambda folder: set())
    orders = {}
    for native in (True, False):
        monkeypatch.setattr(page, "native_bf16", lambda device, native=native: native)
        orders[native] = [s for s in page.todo() if s in ("vgg", "vgg-grid", "grid-expensive")]
    # ("vgg" leaves the list once the shipped VGG16-BN reaches 90%)
    assert orders[True][-1] == "grid-expensive" and orders[True][0] != "grid-expensive"
    assert orders[False][0] == "grid-expensive" and sorted(orders[False]) == sorted(orders[True])


def _comparison(name, cell, eps, red5, n=1000):
    side = lambda e: {"efficacy": e}   # noqa: E731
    return {"format": "deepsloth-comparison/1", "cell": cell, "label": cell, "model": {"name": name},
            "data": {"n": n}, "attack": {"params": {"eps": eps}},
            "norms": {"linf": {"mean": 0.1}, "l2": {"mean": 1.0}, "l1": {"mean": 50.0}},
            "attacked": {"final_accuracy": 0.5},
            "rad": {"5": {"attacked": side(0.1), "efficacy_reduction": red5},
                    "15": {"attacked": side(0.2), "efficacy_reduction": red5 / 2}}}


def test_budget_section_puts_matched_per_sample_runs_beside_the_grid_cells(tmp_path, monkeypatch):
    """The per-sample budget check: its two matched-budget runs are listed after the grid's three per-sample
    cells and summarised with the numbers of all five; the universal table is absent without its runs; a second
    model's rows stay in the same table (the summaries come after it)."""
    page = _page()
    name, other = "mobilenet_sdn_cifar10", "vgg16bn_sdn_cifar10"
    monkeypatch.setattr(page, "RESULTS", tmp_path)
    monkeypatch.setattr(page, "load_results", lambda folder: [
        json.loads(f.read_text()) for f in sorted(Path(folder).rglob("*.json"))])
    for folder, cell, eps, red, n, *model in (("grid", "deepsloth-linf-sample", 8 / 255, 0.98, 1000),
                                               ("grid", "deepsloth-l2-sample", 1.0, 0.467, 1000),
                                               ("grid", "deepsloth-l1-sample", 8.0, 0.728, 1000),
                                               ("grid", "pgd-linf-sample", 8 / 255, -0.04, 1000),
                                               ("budget", "deepsloth-l2-sample", 3.67, 0.961, 500),
                                               ("budget", "deepsloth-l1-sample", 63.0, 1.0, 500),
                                               ("grid", "deepsloth-linf-sample", 8 / 255, 0.963, 1000, other),
                                               ("budget", "deepsloth-l1-sample", 63.0, 0.999, 500, other)):
        m = model[0] if model else name
        d = tmp_path / folder / m
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{cell}.json").write_text(json.dumps(_comparison(m, cell, eps, red, n)))
    lines = page.budget_section()
    # one table: the header's separator, then every model's rows without a break
    start = lines.index("|" + "---|" * 9) + 1
    table = lines[start:lines.index("", start)]
    assert [line.split(" | ")[0] for line in table] == [f"| {name}"] * 5 + [f"| {other}"] * 2
    assert lines[0] == "## Budget check: per-sample DeepSloth in l_2 and l_1"
    assert not any("universal DeepSloth in l_2" in line for line in lines)
    rows = [line for line in lines if line.startswith(f"| {name} |")]
    assert [r.split(" | ")[1] for r in rows] == ["deepsloth-linf-sample", "deepsloth-l2-sample", "deepsloth-l1-sample",
                                                 "deepsloth-l1-sample **matched budget**",
                                                 "deepsloth-l2-sample **matched budget**"]
    assert rows[3].split(" | ")[2:4] == ["500", "63"] and rows[4].split(" | ")[6] == "96.1"
    summary = next(line for line in lines if line.startswith(f"**{name}**"))
    assert "per-sample DeepSloth in l_2 / l_1 cuts the efficacy at RAD 5% by 96.1% / 100.0%" in summary
    assert "(default budgets: 46.7% / 72.8%; l_inf: 98.0%)" in summary


def test_precision_section_pairs_each_cell_with_its_grid_twin_in_the_other_precision(tmp_path, monkeypatch):
    """A cell crafted again under bf16 is listed beside the grid's fp32 cell (fp32 first), with the largest gap
    in the RAD 5% reduction; a precision record without a grid twin, and the clean cell, are left out."""
    page = _page()
    monkeypatch.setattr(page, "RESULTS", tmp_path)
    monkeypatch.setattr(page, "load_results", lambda folder: [
        dict(json.loads(f.read_text()), _file=str(f)) for f in sorted(Path(folder).rglob("*.json"))])
    name = "resnet56_sdn_cifar10"

    def rec(cell, red5, amp=None):
        r = _comparison(name, cell, 8 / 255, red5)
        if amp:
            r["attack"]["params"]["amp"] = amp
        return r
    files = {"grid": [rec("pgd-linf-sample", 0.007), rec("deepsloth-linf-sample", 0.991)],
             "precision": [rec("deepsloth-linf-sample", 0.989, "bf16"), rec("pgd-linf-sample", 0.005, "bf16"),
                           rec("deepsloth-l1-sample", 0.5, "bf16"), dict(_record(name, "0" * 64), attack=None)]}
    for sub, recs in files.items():
        (tmp_path / sub / name).mkdir(parents=True)
        for i, r in enumerate(recs):
            (tmp_path / sub / name / f"{r['cell']}-{i}.json").write_text(json.dumps(r))
    out = page.precision_section()
    rows = [line for line in out if line.startswith(f"| {name}")]
    assert rows == [f"| {name} | pgd-linf-sample | fp32 / bf16 | 50.0 / 50.0 | 0.100 / 0.100 | 0.7 / 0.5 | 0.4 / 0.2 |",
                    f"| {name} | deepsloth-linf-sample | fp32 / bf16 | 50.0 / 50.0 | 0.100 / 0.100 | 99.1 / 98.9 | "
                    "49.5 / 49.5 |"]
    assert any("largest gap in the efficacy reduction at RAD 5% is 0.2 points" in line for line in out)
    (tmp_path / "grid" / name / "pgd-linf-sample-0.json").unlink()
    (tmp_path / "grid" / name / "deepsloth-linf-sample-1.json").unlink()
    assert page.precision_section() == []


def test_page_sections_come_out_as_committed(tmp_path, monkeypatch):
    """Each study's section, rendered by the library (deepsloth.experiments.studies) with this page's texts, is
    the committed docs/results.md's, line for line (the tables written next to the records are left out here)."""
    page = _page()
    for study in ("grid", "transfer", "defence", "budget", "precision", "tiny"):
        shutil.copytree(ROOT / "docs" / "results" / study, tmp_path / study,
                        ignore=shutil.ignore_patterns("tables.*", "summary.*", "*.png"))
    monkeypatch.setattr(page, "RESULTS", tmp_path)
    tables = []
    monkeypatch.setattr(page, "write_report", lambda folder, out, formats, results: tables.append(Path(folder).name))
    committed = (ROOT / "docs" / "results.md").read_text().split("\n")
    for render, heading in ((page.budget_section, "## Budget check: universal DeepSloth in l_2 and l_1"),
                            (page.precision_section, "## Precision check: fp32 and bf16 autocast"),
                            (page.transfer_section, "## Black-box transfer"),
                            (page.defence_section, "## Adversarial training against slowdown"),
                            (page.tiny_section, "## Tiny ImageNet (shared subset: 100 training images per class)")):
        lines = render()
        start = committed.index(heading)
        assert lines[0] == heading and committed[start:start + len(lines)] == lines, heading
        assert committed[start + len(lines)].startswith("## "), heading   # nothing of the section left out
    assert tables == ["transfer", "defence", "tiny"]
    # the budget section holds both checks, each table with the grid's cells first
    budget = page.budget_section()
    assert sum(line.startswith("## Budget check") for line in budget) == 2
    assert ("| mobilenet_sdn_cifar10 | DeepSloth (universal, l_1) **matched budget** | 1,000 | 90 | "
            "0.628 / 4.67 / 82.5 | 0.539 | 31.8 | 14.4 | 52.1 |") in budget


def test_every_queue_step_the_page_can_ask_for_is_defined_in_the_queue_script(monkeypatch):
    """`--todo`'s steps (all of them, as if nothing were saved) each have a step_ function in train_queue.sh, and
    the model families' grids run their planned cells (l_inf everywhere, per-sample l_2 / l_1)."""
    import re
    page = _page()
    monkeypatch.setattr(page, "RESULTS", ROOT / "no-such-results")
    monkeypatch.setattr(page, "ROOT", ROOT / "no-such-root")
    steps = page.todo()
    defined = set(re.findall(r"^step_([\w-]+)\(\)", (ROOT / "scripts" / "train_queue.sh").read_text(), re.M))
    assert {"msdnet-grid", "vit", "vit-grid", "vit-transfer"} <= set(steps) and set(steps) <= defined
    for family in page.FAMILIES:
        cells = page.planned_cells(family)
        assert cells[0] == "clean"
        assert {"deepsloth-l1-sample", "deepsloth-l2-sample", "uap-linf-universal"} <= set(cells)
        assert not any(c.startswith(("deepsloth-l1-u", "deepsloth-l2-u", "deepsloth-l1-c", "deepsloth-l2-c"))
                       for c in cells)
    assert page.planned_cells("resnet56_sdn_cifar10") == page.QUEUE_ORDER


def test_collected_records_carry_no_machine_paths(tmp_path):
    page = _page()
    rec = {"model": {"name": "m", "path": "/home/me/x/src/deepsloth/zoo/resnet56_sdn_cifar10"},
           "calibration": {"file": "/root/.cache/deepsloth/thresholds/ab12.json"},
           "transfer": {"surrogate": {"path": "/data/runs/at/mobilenet-ic"}},
           "crafting": {"file": "runs/grid/m/adversarial/x.safetensors"}, "rows": [{"path": "/a/b/c.json"}]}
    src, dest = tmp_path / "a.json", tmp_path / "out" / "a.json"
    src.write_text(json.dumps(rec))
    assert page.copy_record(src, dest) and not page.copy_record(src, dest)   # unchanged: not written again
    out = json.loads(dest.read_text())
    assert out["model"]["path"] == "deepsloth/zoo/resnet56_sdn_cifar10"
    assert out["calibration"]["file"] == "ab12.json" and out["transfer"]["surrogate"]["path"] == "mobilenet-ic"
    assert out["crafting"]["file"] == rec["crafting"]["file"] and out["rows"] == [{"path": "c.json"}]
    # and every record on the results page is in that form
    for f in (ROOT / "docs" / "results").rglob("*.json"):
        text = f.read_text()
        assert '"path": "/' not in text and '"file": "/' not in text, f
