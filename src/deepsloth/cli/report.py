"""`deepsloth report DIR [--format md|tex|csv|all] [--out DIR]`: every study found in the result files under
DIR, never recomputed. The attack grid: paper-style tables (one per model, rows = attacks), a summary with one
row per model and an EEC grid. Then, each when DIR holds it: the paper's headline shape, black-box transfer
(its two scenarios included), adversarial training (defence), the defence study (`deepsloth defend`: defences),
the budget checks and the fp32 / bf16 precision check, as <study>.md."""
from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import DeepslothError, DeepslothWarning
from .common import add_json, nonempty, print_json, writable_dir


def run(args) -> int:
    from ..experiments.defend import load_records
    from ..experiments.figures import plot_defences
    from ..experiments.report import FORMATS, group_by_model, load_results, render_markdown, render_summary, write_report
    from ..experiments.studies import write_studies

    formats = FORMATS if "all" in args.format else tuple(dict.fromkeys(args.format))
    out = writable_dir(args.out) if args.out else None
    skipped: list = []
    results = load_results(args.folder, skipped=skipped)
    defences = load_records(args.folder)
    if not results and not defences:
        why = f"; skipped {len(skipped)} unreadable file(s), first: {skipped[0]}" if skipped else ""
        raise DeepslothError(f"no comparison results under {args.folder}{why} "
                             "(run `deepsloth grid`, `deepsloth attack`, `deepsloth transfer` or `deepsloth defend`)")
    if skipped and not args.skip_unreadable:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise DeepslothError(f"{skipped[0]}{more}; nothing written: fix or remove it, or pass --skip-unreadable "
                             f"to render the rest")
    for why in skipped:
        warnings.warn(f"skipping a result file: {why}", DeepslothWarning)
    folder = Path(args.folder)
    out = out if out is not None else (folder if folder.is_dir() else folder.parent)
    # the grid's tables: every comparison record (transfer ones in their victim's table), unless all are
    # transfer records
    grid = any("transfer" not in r for r in results)
    written = write_report(folder, out, formats=formats, figure=not args.no_figure, results=results) if grid else {}
    links = dict(tables="[tables.md](tables.md)" if "md" in written else None,
                 figure="eec_grid.png" if "figure" in written else None)
    if defences and not args.no_figure:
        written["defences-figure"] = str(plot_defences(defences, out / "defences.png"))
    studies = write_studies(results, out, defences=defences,
                            defences_figure="defences.png" if "defences-figure" in written else None, **links)
    written.update({f"study-{k}": v for k, v in studies.items()})
    if args.json:
        print_json(written)
        return 0
    if grid:
        models = group_by_model(results)
        print(render_markdown(models))
        print("### One row per model (RAD 5%)\n\n" + render_summary(models, "md"))
    for path in studies.values():
        print(Path(path).read_text())
    print("wrote " + ", ".join(written.values()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="tables and figures of every study in a results folder (grid, transfer, "
                                      "defence, budget and precision checks)",
                       description=__doc__.replace("\n", " "))
    p.add_argument("folder", type=nonempty, help="results folder (searched recursively for comparison JSON files)")
    p.add_argument("--format", nargs="+", default=["all"], choices=("md", "tex", "csv", "all"),
                   help="formats of the grid's tables (the other studies are Markdown)")
    p.add_argument("--out", default=None, type=nonempty,
                   help="where to write tables.{md,tex,csv}, summary.{md,tex,csv}, eec_grid.png and <study>.md "
                        "(default: the folder)")
    p.add_argument("--no-figure", action="store_true", help="tables only")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="render the rest when a result file is unreadable or incomplete (each is named in a warning); "
                        "without it such a file is an error and nothing is written")
    add_json(p)
    p.set_defaults(func=run)
