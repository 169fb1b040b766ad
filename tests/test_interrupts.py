"""Real signals to a real `python -m deepsloth` process (issue 14): SIGTERM / SIGINT stop a
command with exit code 130 and one line on stderr, keep what is finished, and a rerun resumes to
the bit-identical result. While the process holds its output, a second writer of the same output
(started from the test, the process frozen with SIGSTOP so the overlap is certain) stops with a
one-line error naming it, and the first still finishes with a valid result.

Each test starts one process (a few seconds of `import torch`); the reruns and the uninterrupted
reference runs go through `cli.main.main` in this process, single-threaded like the child.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import synthetic_sdn

import deepsloth
from deepsloth.cli.main import main
from deepsloth.io import load_tensors

pytestmark = [pytest.mark.skipif(os.name == "nt", reason="POSIX signals"), pytest.mark.usefixtures("one_thread")]

INTERRUPTED = "deepsloth: interrupted; finished work is kept, rerun the same command to resume\n"
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An untrained ResNet-56 SDN and synthetic data labelled with its own predictions."""

    base = tmp_path_factory.mktemp("interrupts")
    root, model_dir, _ = synthetic_sdn(base, 32, 16, store_cost=True)
    return {"model": model_dir, "root": root, "base": base}


class Child:
    """`python -m deepsloth ARGS` with SIGINT/SIGTERM at their defaults (a test runner started in
    the background may have inherited SIGINT ignored), output to files, killed if the test fails."""

    def __init__(self, args, tmp: Path):
        env = dict(os.environ, OMP_NUM_THREADS="1", DEEPSLOTH_NO_PROGRESS="1", PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join([str(Path(deepsloth.__file__).parents[1]),
                                               os.environ.get("PYTHONPATH", "")]))
        self.out, self.err = tmp / "child.out", tmp / "child.err"
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen([sys.executable, "-m", "deepsloth", *map(str, args)], stdout=o, stderr=e,
                                         stdin=subprocess.DEVNULL, env=env, preexec_fn=_default_signals)

    def wait_for(self, what: str, predicate) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not predicate():
            if self.proc.poll() is not None:
                pytest.fail(f"the process ended (rc {self.proc.returncode}) before {what}: {self.stderr()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}: {self.stderr()[-2000:]}")
            time.sleep(0.02)

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def finish(self) -> int:
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the process did not stop within {TIMEOUT} s")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


def _default_signals():
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture
def child(tmp_path):
    started = []

    def start(args):
        c = Child(args, tmp_path)
        started.append(c)
        return c
    yield start
    for c in started:
        c.kill()


def _second_writer_is_refused(capsys, argv, pid: int, what: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"deepsloth: error: another deepsloth process (pid {pid}, started ") and what in err, err


def _files(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_train_sigterm_then_resume_is_bit_identical(setup, tmp_path, child, capsys):
    args = ["train", "--arch", "resnet56", "--mode", "cnn", "--recipe", "fast", "--epochs", "3", "--batch-size", "8",
            "--train-n", "16", "--test-n", "8", "--seed", "1", "--data-root", setup["root"], "--device", "cpu"]
    out = tmp_path / "killed"
    c = child(args + ["--out", out])
    c.wait_for("the first epoch's checkpoint", lambda: (out / "checkpoint.json").is_file())
    c.signal(signal.SIGSTOP)   # holds the run's lock: a second training into --out is refused
    _second_writer_is_refused(capsys, [*map(str, args), "--out", str(out), "--resume"], c.proc.pid,
                              f"is writing the training run in {out}")
    c.signal(signal.SIGCONT)
    c.signal(signal.SIGTERM)
    assert c.finish() == 130
    assert c.stderr() == INTERRUPTED
    assert (out / "checkpoint.json").is_file() and not (out / "model.safetensors").exists()
    assert not list(out.glob("*.lock"))
    assert main([*map(str, args), "--out", str(out), "--resume"]) == 0
    assert main([*map(str, args), "--out", str(tmp_path / "reference")]) == 0
    got, want = load_tensors(out / "model.safetensors"), load_tensors(tmp_path / "reference" / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert _files(out) == _files(tmp_path / "reference") == ["model.json", "model.safetensors"]


def test_grid_sigint_in_the_second_cell_resumes_identically(setup, tmp_path, child):
    args = ["grid", "--model", setup["model"], "--data-root", setup["root"], "--device", "cpu", "--n", "2",
            "--batch-size", "1", "--attacks", "pgd-linf-sample", "pgd-avg-linf-sample"]
    out = tmp_path / "killed"
    c = child(args + ["--out", out])
    adv = out / "model" / "adversarial"
    c.wait_for("the second cell's first batch",
               lambda: any((out / "model").glob("clean-*.json")) and any(adv.glob("*.partial/batch-*")))
    c.signal(signal.SIGINT)
    assert c.finish() == 130
    assert c.stderr() == INTERRUPTED
    assert not list(out.rglob("*.lock")) and not list(out.rglob(".*.tmp"))
    assert not list((out / "model").glob("pgd-avg-*.json"))   # the third cell never started
    assert main([*map(str, args), "--out", str(out)]) == 0
    assert main([*map(str, args), "--out", str(tmp_path / "reference")]) == 0
    ref = tmp_path / "reference"
    assert _files(out) == _files(ref) and len(_files(ref)) == 3 + 2 * 2   # 3 comparisons, 2 results
    for rel in _files(ref):
        if rel.endswith(".safetensors"):
            assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel


def test_attack_sigint_then_rerun_gives_the_identical_result(setup, tmp_path, child, capsys):
    args = ["attack", "--model", setup["model"], "--data-root", setup["root"], "--device", "cpu", "--n", "3",
            "--batch-size", "1", "--steps", "10", "--seed", "2"]
    out = tmp_path / "killed"
    c = child(args + ["--out", out])
    adv = out / "model" / "adversarial"
    c.wait_for("the first finished batch", lambda: any(adv.glob("*.partial/batch-*")))
    c.signal(signal.SIGSTOP)   # mid-way through crafting, holding the result's lock
    stem = next(adv.glob("*.partial")).name[:-len(".partial")]
    _second_writer_is_refused(capsys, [*map(str, args), "--out", str(out)], c.proc.pid,
                              f"is writing {adv / stem}.safetensors")
    assert any(adv.glob("*.partial/batch-*"))   # the refused writer touched nothing of the first's
    c.signal(signal.SIGCONT)
    c.signal(signal.SIGINT)
    assert c.finish() == 130
    assert c.stderr() == INTERRUPTED
    assert not list(adv.glob("*.safetensors")) and not list(out.rglob("*.lock"))
    kept = sorted(p.name for p in (adv / f"{stem}.partial").glob("batch-*"))
    assert 1 <= len(kept) < 3
    assert main([*map(str, args), "--out", str(out)]) == 0
    assert main([*map(str, args), "--out", str(tmp_path / "reference")]) == 0
    ref = tmp_path / "reference"
    assert _files(out) == _files(ref)
    name = f"model/adversarial/{stem}.safetensors"
    assert (out / name).read_bytes() == (ref / name).read_bytes()
