"""The plain-line progress reporter used when stderr is not a terminal (log files, CI, the queue)."""
from __future__ import annotations

import io
from types import SimpleNamespace

import deepsloth.progress as progress_module
from deepsloth.progress import LogProgress


def _clock(monkeypatch, times):
    """The reporter's clock reads `times` in turn (once at start, at each update and for each line)."""
    ticks = iter(times)
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=lambda: next(ticks)))


def test_log_lines_count_elapsed_time_and_estimate_the_rest(monkeypatch):
    _clock(monkeypatch, [0.0, 30.0, 30.0, 60.0])
    out = io.StringIO()
    bar = LogProgress(desc="cells", total=4, unit="cell", interval=10, stream=out)
    bar.update(1)
    bar.set_postfix(acc="0.9")
    bar.close()
    lines = out.getvalue().splitlines()
    # one cell in 30 s, three left: 1m30s; close repeats the last count as "done"
    assert lines == ["cells: 1/4 cell (25%), 30s elapsed, ~1m30s left",
                     "cells: done, 1/4 cell (25%), 1m00s elapsed, ~3m00s left [acc=0.9]"]


def test_a_resumed_run_estimates_from_the_units_done_in_this_run(monkeypatch):
    _clock(monkeypatch, [0.0, 120.0, 120.0])
    out = io.StringIO()
    bar = LogProgress(desc="UAP passes", total=100, unit="pass", interval=10, stream=out, initial=40)
    bar.update(2)   # 2 passes in 120 s, 58 left: 58 min (counting the 40 resumed ones would say ~22 min)
    assert out.getvalue() == "UAP passes: 42/100 pass (42%), 2m00s elapsed, ~58m00s left\n"


def test_short_loops_stay_quiet(monkeypatch):
    _clock(monkeypatch, [0.0] + [1.0] * 6)
    out = io.StringIO()
    for _ in LogProgress(range(5), desc="quick", interval=60, stream=out):
        pass
    assert out.getvalue() == ""
