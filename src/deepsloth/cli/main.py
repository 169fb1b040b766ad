"""Entry point of the `deepsloth` console script.

Each command group lives in its own module under `deepsloth.cli` exposing
`register(subparsers)`; the parser it adds sets `func(args) -> int | None`.
A `DeepslothError` becomes a one-line message on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .. import __version__
from ..errors import DeepslothError

# Order here is the order in `deepsloth --help`.
COMMANDS = ["audit", "data", "describe", "train", "evaluate", "attack", "latency", "zoo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepsloth",
        description="Slowdown attacks and audits for input-adaptive multi-exit networks.")
    parser.add_argument("--version", action="version", version=f"deepsloth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"deepsloth.cli.{name}").register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except DeepslothError as exc:
        print(f"deepsloth: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepsloth: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
