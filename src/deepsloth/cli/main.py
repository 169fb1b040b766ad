"""Entry point of the `deepsloth` console script.

Each command lives in its own module under `deepsloth.cli` exposing `register(subparsers)`;
the parser it adds sets `func(args) -> int | None`. Building the parser imports no torch (so
`--help` is fast); commands import the library when they run. Bad input of any kind (an option
argparse rejects, or a `DeepslothError` from the library) is one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from typing import List, NoReturn, Optional

from .. import __version__
from ..errors import DeepslothError, DeepslothWarning

# Order here is the order in `deepsloth --help`.
COMMANDS = ["audit", "data", "describe", "train", "evaluate", "attack", "grid", "report", "latency", "represent",
            "transfer", "defend", "zoo"]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): `deepsloth attack: error: ...`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="deepsloth",
                    description="Slowdown attacks and audits for input-adaptive multi-exit networks.")
    parser.add_argument("--version", action="version", version=f"deepsloth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"deepsloth.cli.{name}").register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _terminate_as_interrupt()
    try:
        with _one_line_warnings():
            rc = args.func(args)
        sys.stdout.flush()
    except DeepslothError as exc:
        print(f"deepsloth: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepsloth: interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:   # `deepsloth zoo list --json | head`: the reader went away
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
    return int(rc or 0)


@contextlib.contextmanager
def _one_line_warnings():
    """The library's own warnings (`DeepslothWarning`) as one `deepsloth: warning: ...` line on stderr."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, DeepslothWarning):
                print(f"deepsloth: warning: {str(message).splitlines()[0]}", file=sys.stderr, flush=True)
            else:
                shown(message, category, filename, lineno, file, line)
        warnings.showwarning = show
        yield


def _terminate_as_interrupt() -> None:
    """SIGTERM (a scheduler's kill, `timeout`) stops a command like Ctrl-C: finished work is kept."""
    import signal
    import threading

    def handler(signum, frame):
        raise KeyboardInterrupt
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
