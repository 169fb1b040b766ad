"""`deepsloth report` renders every study from result files alone: run on copies of the saved records under
docs/results/, its tables hold exactly the rows docs/results.md (scripts/results_page.py) shows for that study."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List

import pytest

from deepsloth.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PAGE = (ROOT / "docs" / "results.md").read_text()


def section(text: str, heading: str) -> List[str]:
    """The lines of the `## heading` section of a Markdown text (up to the next `## ` heading)."""
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def tables(lines: List[str]) -> List[List[str]]:
    """Every Markdown table among `lines`, as its lines (header and separator included)."""
    out: List[List[str]] = []
    for prev, line in zip([""] + lines, lines):
        if line.startswith("|"):
            if not prev.startswith("|"):
                out.append([])
            out[-1].append(line)
    return out


def copy_records(src: Path, dest: Path) -> Path:
    """The comparison records under `src` (not the tables and figures written next to them) into `dest`."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("tables.*", "summary.*", "*.png"))
    return dest


def report(folder: Path, *extra: str) -> int:
    return main(["report", str(folder), "--no-figure", *extra])


def test_transfer_tables_are_the_results_pages(tmp_path, capsys):
    folder = copy_records(RESULTS / "transfer", tmp_path / "transfer")
    assert report(folder, "--format", "md") == 0
    mine = (folder / "transfer.md").read_text()
    page = section(PAGE, "## Black-box transfer")
    # cross-architecture, scenario 1, scenario 2: the same tables, row for row
    assert tables(mine.splitlines()) == tables(page)
    # cross-architecture: MobileNet, MSDNet and ViT with the ResNet-56 SDN, both ways, 2 attacks each
    assert [len(t) - 2 for t in tables(page)] == [12, 8, 6]
    # the MSDNet's RAD 1% rows below the cross-architecture table, the same in both
    other = [line for line in page if line.startswith("- msdnet_cifar10 from resnet56_sdn_cifar10")]
    assert len(other) == 2 and all(line in mine.splitlines() for line in other)
    assert "RAD 1%: clean efficacy 0.847" in other[0]
    rows = tables(mine.splitlines())
    assert rows[0][2] == ("| mobilenet_sdn_cifar10 | resnet56_sdn_cifar10 | deepsloth-linf-sample | 0.789 | 0.547 | "
                          "30.7 | 98.3 | 18.0 | 93.2 | 75.0 |")
    assert rows[1][-1] == ("| 100% | universal | 79.1 | 50000 | 5+1 | 16 | 0.789 | 0.750 | 4.9 | 8.9 | 1.6 | 3.1 | "
                           "84.8 |")
    assert rows[2][4] == ("| 5 | 4 | bird, cat, automobile, airplane, ship | bird, cat, automobile, airplane, horse | "
                          "84.0 | 83.1 | sample | 0.756 | 0.666 | 11.9 | 87.2 | 3.8 | 56.8 | 81.0 |")
    assert "first 500 or 1,000 test images of the victim; seed 0." in mine and "Victim: mobilenet_sdn_cifar10 (final " \
        "accuracy 87.2%)" in mine
    # the white-box records make a grid too: the victims' full tables, linked from the transfer page
    assert (folder / "tables.md").is_file() and "[tables.md](tables.md)" in mine
    assert "| DeepSloth (per-sample, l_inf) from resnet56_sdn_cifar10 | 75.0 |" in (folder / "tables.md").read_text()
    out = capsys.readouterr().out
    assert "## Black-box transfer" in out and str(folder / "transfer.md") in out


def test_defence_table_and_finding_are_the_results_pages(tmp_path):
    folder = copy_records(RESULTS / "defence", tmp_path / "defence")
    assert report(folder, "--format", "md") == 0
    mine = (folder / "defence.md").read_text().splitlines()
    page = section(PAGE, "## Adversarial training against slowdown")
    assert tables(mine) == tables(page) and len(tables(page)[0]) == 2 + 7
    assert tables(mine)[0][-1] == ("| mobilenet_sdn_cifar10 | backbone AT: none; IC term: none | 87.8 | 0.789 | "
                                   "0.014 | 98.3 | 0.718 | 8.9 | 1.2 |")
    # the paragraph against the paper's finding: the page's, less the page's note on how its models were trained
    finding = next(line for line in mine if line.startswith("**Against the paper's finding**"))
    on_page = next(line for line in page if line.startswith("**Against the paper's finding**"))
    assert on_page.startswith(finding + " Our budget is smaller than the paper's")
    assert "per-sample DeepSloth still cuts their efficacy by 52.3-59.5% (98.3%)" in finding
    assert finding.endswith("at most 7.3 points between the models: the backbone's robustness does most of the work.")
    # only the plainly trained model is held against the paper's headline
    headline = (folder / "headline.md").read_text()
    assert "- **mobilenet_sdn_cifar10** (efficacy reduction at RAD 5%): per-sample DeepSloth linf: 98.3% (>= 90%)" \
        in headline and "mobilenet-ic-" not in headline


def test_budget_and_precision_tables_are_the_results_pages(tmp_path):
    """A folder with a grid and budget checks (records at other budgets), and one with a grid and cells crafted
    again in the other precision. (Both in one folder, the budget table would show the newest l_inf cell, the
    precision check's bf16 one, where the page shows the grid's.)"""
    folder, other = tmp_path / "runs", tmp_path / "amp"
    for study in ("grid", "budget"):
        copy_records(RESULTS / study, folder / study)
    for study in ("grid", "precision"):
        copy_records(RESULTS / study, other / study)
    assert report(folder, "--format", "md") == 0 and report(other, "--format", "md") == 0
    assert not (folder / "precision.md").exists() and not (other / "budget.md").exists()
    budget = (folder / "budget.md").read_text().replace("**other budget**", "**matched budget**")
    page = section(PAGE, "## Budget check: universal DeepSloth in l_2 and l_1") + \
        section(PAGE, "## Budget check: per-sample DeepSloth in l_2 and l_1")
    assert tables(budget.splitlines()) == tables(page) and [len(t) - 2 for t in tables(page)] == [5, 15]
    assert "| resnet56_sdn_cifar10 | DeepSloth (per-sample, l_2, bf16) **matched budget** | 500 | 3.67 | " \
           "0.135 / 1.28 / 51.8 | 0.002 | 99.5 | 98.0 | 21.6 |" in budget
    assert ("**vgg16bn_sdn_cifar10**: with the other budgets per-sample DeepSloth in l_2 / l_1 cuts the efficacy at "
            "RAD 5% by 97.8% / 99.9% (default budgets: 54.6% / 75.5%; l_inf: 96.3%).") in budget
    precision = (other / "precision.md").read_text().splitlines()
    page = section(PAGE, "## Precision check: fp32 and bf16 autocast")
    assert tables(precision) == tables(page) and len(tables(page)[0]) == 2 + 3
    assert "The largest gap in the efficacy reduction at RAD 5% is 0.5 points." in precision


def test_a_lone_transfer_record_gives_the_transfer_table_and_no_grid(tmp_path, capsys):
    src = next((RESULTS / "transfer" / "mobilenet_sdn_cifar10" / "transfer").glob(
        "resnet56_sdn_cifar10-deepsloth-linf-sample-*.json"))
    (tmp_path / "t").mkdir()
    shutil.copyfile(src, tmp_path / "t" / src.name)
    assert main(["report", str(tmp_path / "t"), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written == {"study-transfer": str(tmp_path / "t" / "transfer.md")}
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [src.name, "transfer.md"]
    rows = tables((tmp_path / "t" / "transfer.md").read_text().splitlines())
    assert rows == [tables(section(PAGE, "## Black-box transfer"))[0][:3]]
    # the text report too: the transfer table, no per-model grid table
    assert main(["report", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert rows[0][2] in out and "### One row per model" not in out and "EE acc %" not in out


def test_a_truncated_record_is_named_in_one_warning_line(tmp_path, capsys):
    folder = copy_records(RESULTS / "defence", tmp_path / "defence")
    good = next((folder / "mobilenet-ic-pgd").glob("deepsloth-linf-sample-*.json"))
    bad = folder / "mobilenet-ic-pgd" / "deepsloth-linf-universal-000000000000.json"
    bad.write_text(good.read_text()[:5000])
    # an unreadable record stops the report, naming it, with nothing written ...
    assert report(folder, "--format", "md") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "--skip-unreadable" in err
    assert not (folder / "defence.md").exists()
    # ... unless told to skip it
    assert report(folder, "--format", "md", "--skip-unreadable") == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deepsloth: warning: skipping a result file: ")
    assert str(bad) in err and "not valid JSON" in err
    # the other records are all there
    assert tables((folder / "defence.md").read_text().splitlines()) == \
        tables(section(PAGE, "## Adversarial training against slowdown"))


def test_a_folder_of_corrupt_files_only_is_a_one_line_error_naming_one(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "clean-0.json").write_text('{"format": "deepsloth-comparison/1", "cell": ')
    assert main(["report", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no comparison results" in err and str(tmp_path / "r" / "clean-0.json") in err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["clean-0.json"]


def test_load_results_warns_with_the_file_name_from_python(tmp_path):
    from deepsloth.errors import DeepslothWarning
    from deepsloth.experiments.report import load_results
    (tmp_path / "x.json").write_text("{")
    with pytest.warns(DeepslothWarning, match="x.json is not valid JSON"):
        assert load_results(tmp_path) == []
    skipped: list = []
    assert load_results(tmp_path, skipped=skipped) == [] and len(skipped) == 1 and "x.json" in skipped[0]


def test_a_comparison_record_without_its_fields_is_named_not_a_traceback(tmp_path, capsys):
    folder = copy_records(RESULTS / "defence", tmp_path / "defence")
    bare = folder / "clean-000000000000.json"
    bare.write_text('{"format": "deepsloth-comparison/1"}')
    assert report(folder, "--format", "md") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bare} is a comparison record without its cell" in err
    assert report(folder, "--format", "md", "--skip-unreadable") == 0
    assert str(bare) in capsys.readouterr().err


def _cell(cell, costs, clean_counts, attacked_counts):
    from deepsloth.metrics.efficacy import efficacy, efficacy_reduction
    clean, attacked = efficacy(clean_counts, costs), efficacy(attacked_counts, costs)
    return {"cell": cell, "label": cell.replace("deepsloth-linf-sample", "DeepSloth (per-sample, l_inf)"), "costs": costs, "model": {"num_classes": 10}, "policy": {"name": "confidence"},
            "clean": {"per_exit_accuracy": [0.5, 0.7]},
            "rad": {"5": {"threshold": 0.6, "efficacy_reduction": efficacy_reduction(clean, attacked),
                          "clean": {"efficacy": clean, "exit_counts": clean_counts},
                          "attacked": {"efficacy": attacked, "exit_counts": attacked_counts}}}}


def test_headline_names_the_most_a_slowdown_can_take_when_the_last_internal_exit_is_early():
    """With the last internal exit at 0.75 of the cost, an input at the final exit still leaves efficacy
    0.125, so even an attack that sends every input there stays below 90%: the line says so, with the
    numbers of docs/method.md §4.4."""
    from deepsloth.experiments.studies import headline
    from deepsloth.metrics.efficacy import efficacy
    costs = [0.25, 0.5, 0.75, 1.0]
    clean_counts = [60, 20, 10, 10]
    everything_late = _cell("deepsloth-linf-sample", costs, clean_counts, [0, 0, 0, 100])
    clean = _cell("clean", costs, clean_counts, clean_counts)
    lines = headline({"m": {"a": clean, "b": everything_late}})
    eff = efficacy(clean_counts, costs)
    most = (eff - 0.125) / eff
    assert abs(everything_late["rad"]["5"]["efficacy_reduction"] - most) < 1e-12 and most < 0.9
    assert "BELOW 90%" in lines[0]
    assert lines[1] == (f"  - DeepSloth (per-sample, l_inf) sends 100.0% of the inputs to the final exit (clean: 10.0%). "
                        f"An input answered there still leaves efficacy (1 - c_{{K-1}}) / 2 = 0.125, as the last "
                        f"internal exit costs 0.750 of the network, so no attack can cut this model's efficacy by "
                        f"more than {most * 100:.1f}% at RAD 5%: the attack reaches 100% of that.")
    # an attack at or above 90% gets no such line
    deep = _cell("deepsloth-linf-sample", [0.25, 0.5, 0.99, 1.0], clean_counts, [0, 0, 0, 100])
    assert len(headline({"m": {"a": _cell("clean", [0.25, 0.5, 0.99, 1.0], clean_counts, clean_counts),
                               "b": deep}})) == 1
