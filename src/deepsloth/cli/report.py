"""`deepsloth report DIR [--format md|tex|csv|all] [--out DIR]`: paper-style tables (one per model,
rows = attacks), a summary with one row per model (the defence table) and an EEC grid from the
comparison files under DIR (written by grid, attack, evaluate --out, audit); never recomputes."""
from __future__ import annotations

from .common import add_json, nonempty, print_json, writable_dir


def run(args) -> int:
    from ..experiments.report import FORMATS, group_by_model, load_results, render_markdown, render_summary, write_report

    formats = FORMATS if "all" in args.format else tuple(dict.fromkeys(args.format))
    out = writable_dir(args.out) if args.out else None
    written = write_report(args.folder, out, formats=formats, figure=not args.no_figure)
    if args.json:
        print_json(written)
        return 0
    models = group_by_model(load_results(args.folder))
    print(render_markdown(models))
    print("### One row per model (RAD 5%)\n\n" + render_summary(models, "md"))
    print("wrote " + ", ".join(written.values()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="paper-style tables (Markdown, LaTeX, CSV) and EEC figure from results",
                       description=__doc__.replace("\n", " "))
    p.add_argument("folder", type=nonempty, help="results folder (searched recursively for comparison JSON files)")
    p.add_argument("--format", nargs="+", default=["all"], choices=("md", "tex", "csv", "all"))
    p.add_argument("--out", default=None, type=nonempty, help="where to write tables.{md,tex,csv}, summary.{md,tex,csv} and eec_grid.png "
                                                                  "(default: the folder)")
    p.add_argument("--no-figure", action="store_true", help="tables only")
    add_json(p)
    p.set_defaults(func=run)
