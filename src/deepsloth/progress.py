"""Progress reporting: one wrapper so every long loop looks the same and can be silenced.

On a terminal it is a tqdm bar on stderr. When stderr is not a terminal (a log file, CI, a
batch job) it writes one plain line every `DEEPSLOTH_PROGRESS_INTERVAL` seconds (default 60),
`desc: 12/40 batch (30%), 1m23s elapsed, ~3m14s left`, and, for a loop that printed any, a
final "done" line; loops shorter than the interval stay quiet.
`DEEPSLOTH_NO_PROGRESS=1` silences both.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional


def _fmt(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class LogProgress:
    """The non-terminal progress reporter (the subset of tqdm's interface this package uses)."""

    def __init__(self, iterable: Optional[Iterable] = None, desc: str = "", total: Optional[int] = None,
                 unit: str = "it", interval: Optional[float] = None, stream=None, initial: int = 0):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.desc, self.total, self.unit = desc, total, unit
        self.n = self.initial = int(initial)   # initial: work done before (a resumed run); not timed here
        self.postfix = ""
        self.interval = float(os.environ.get("DEEPSLOTH_PROGRESS_INTERVAL", 60) if interval is None else interval)
        self.stream = stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.closed = False
        self.wrote = False

    def _line(self) -> str:
        elapsed = time.monotonic() - self.start
        done = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = ""
        if self.total and self.initial < self.n < self.total:
            eta = f", ~{_fmt(elapsed / (self.n - self.initial) * (self.total - self.n))} left"
        post = f" [{self.postfix}]" if self.postfix else ""
        return f"{done}{pct}, {_fmt(elapsed)} elapsed{eta}{post}"

    def _write(self, text: str) -> None:
        self.wrote = True
        try:
            self.stream.write(f"{self.desc}: {text}\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._write(self._line())

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.wrote:
                self._write("done, " + self._line())

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            if self.total is None or self.n >= (self.total or 0):
                self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent(LogProgress):
    def _write(self, text: str) -> None:
        pass


def progress(iterable: Optional[Iterable] = None, *, desc: str = "", total: Optional[int] = None,
             disable: Optional[bool] = None, leave: bool = False, unit: str = "it", initial: int = 0):
    """A tqdm bar on a terminal, periodic log lines otherwise, nothing when silenced.

    `initial`: units already done before this run (a resumed one); the time left is estimated from
    the units done in this run only.
    """
    if disable or os.environ.get("DEEPSLOTH_NO_PROGRESS"):
        return _Silent(iterable, desc=desc, total=total, unit=unit, initial=initial)
    if not sys.stderr.isatty():
        return LogProgress(iterable, desc=desc, total=total, unit=unit, initial=initial)
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, leave=leave, unit=unit, dynamic_ncols=True, file=sys.stderr,
                initial=initial)
