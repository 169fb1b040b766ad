"""Write locks (`io.exclusive`): one writer per output; a live holder is a clear error, a dead
one's lock is taken over. Uses `sleep` processes as live holders and reaped ones as dead."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import synthetic_sdn

from deepsloth.errors import DeepslothError
from deepsloth.io import LockHeld, exclusive

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX process checks")


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(path: Path, **fields) -> Path:
    lock = Path(f"{path}.lock")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    info.update(fields)
    lock.write_text(json.dumps(info))
    return lock


def test_lock_holds_pid_host_and_time_and_is_removed(tmp_path):
    target = tmp_path / "sub" / "result.safetensors"
    with exclusive(target, "the result") as lock:
        assert lock == tmp_path / "sub" / "result.safetensors.lock"
        info = json.loads(lock.read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["started"]
    assert not lock.exists()
    with pytest.raises(RuntimeError):
        with exclusive(target, "the result"):
            raise RuntimeError("boom")
    assert not lock.exists()
    with pytest.raises(KeyboardInterrupt):
        with exclusive(target, "the result"):
            raise KeyboardInterrupt
    assert not lock.exists() and list((tmp_path / "sub").iterdir()) == []


def test_live_holder_is_a_clear_error(tmp_path, live_pid):
    lock = _write_lock(tmp_path / "out", pid=live_pid)
    before = lock.read_bytes()
    with pytest.raises(LockHeld) as exc:
        with exclusive(tmp_path / "out", "the grid cell X"):
            pytest.fail("entered a held lock")
    msg = str(exc.value)
    assert isinstance(exc.value, DeepslothError) and "\n" not in msg
    assert f"another deepsloth process (pid {live_pid}, started 2026-01-01T00:00:00+00:00) is writing the grid " \
           f"cell X; wait for it or remove {lock} if it is stale" == msg
    assert lock.read_bytes() == before


@pytest.mark.parametrize("content", ["dead", "garbage", "empty", "reused-pid", "our-pid"])
def test_stale_lock_is_taken_over_with_a_note(tmp_path, capsys, dead_pid, live_pid, content):
    target = tmp_path / "out"
    if content == "dead":
        lock = _write_lock(target, pid=dead_pid)
    elif content == "reused-pid":
        if not Path(f"/proc/{live_pid}/stat").exists():
            pytest.skip("needs /proc")
        lock = _write_lock(target, pid=live_pid, proc_start="1")   # the pid now names another process
    elif content == "our-pid":   # a previous process that had our pid (containers restart pids)
        lock = _write_lock(target, pid=os.getpid())
    else:
        lock = Path(f"{target}.lock")
        lock.write_text("{not json" if content == "garbage" else "")
        old = time.time() - 60
        os.utime(lock, (old, old))
    with exclusive(target, "it"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    err = capsys.readouterr().err
    assert err.startswith(f"deepsloth: note: taking over the stale lock {lock}") and err.count("\n") == 1


def test_lock_from_another_host(tmp_path, capsys):
    lock = _write_lock(tmp_path / "out", pid=1, host="elsewhere.example")
    with pytest.raises(LockHeld, match="pid 1 on elsewhere.example"):
        with exclusive(tmp_path / "out", "it"):
            pass
    old = time.time() - 2 * 24 * 3600
    os.utime(lock, (old, old))
    with exclusive(tmp_path / "out", "it"):
        pass
    assert "more than a day ago" in capsys.readouterr().err and not lock.exists()


def test_another_thread_of_this_process_is_refused(tmp_path):
    inside, release, seen = threading.Event(), threading.Event(), []

    def hold():
        with exclusive(tmp_path / "out", "it"):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(10)
        with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
            with exclusive(tmp_path / "out", "it"):
                seen.append("entered")
    finally:
        release.set()
        t.join()
    assert seen == [] and not Path(f"{tmp_path / 'out'}.lock").exists()


def test_release_keeps_a_lock_someone_else_took_over(tmp_path):
    with exclusive(tmp_path / "out", "it") as lock:
        lock.write_text(json.dumps({"pid": 12345, "host": "other"}))
    assert json.loads(lock.read_text())["pid"] == 12345


def test_racing_takeovers_leave_exactly_one_holder(tmp_path, dead_pid):
    """Threads that all find the same stale lock: one gets in, the others see it held."""
    _write_lock(tmp_path / "out", pid=dead_pid)
    entered, refused, start = [], [], threading.Barrier(6)
    gate = threading.Event()

    def contend(i):
        start.wait()
        try:
            with exclusive(tmp_path / "out", "it"):
                entered.append(i)
                gate.wait(5)
        except LockHeld:
            refused.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    gate.set()
    for t in threads:
        t.join()
    assert len(entered) == 1 and len(refused) == 5


# ------------------------------------------------------------------ the commands that lock

N_TEST = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("locks")
    root, model_dir, _ = synthetic_sdn(base, 8, N_TEST, store_cost=True)
    return {"root": root, "model": model_dir}


def _ctx(setup):
    from deepsloth.experiments.context import load_context
    return load_context(setup["model"], n=N_TEST, device="cpu", data_root=setup["root"])


def test_grid_cell_writer_lock(setup, tmp_path, live_pid, capsys):
    """A comparison being written by a live process: the grid stops with the holder named and
    writes nothing; once the holder is gone its lock is taken over and the cell is written."""
    from deepsloth.cli.main import main
    from deepsloth.experiments.grid import comparison_key

    ctx = _ctx(setup)
    folder = tmp_path / "model"
    path = folder / f"clean-{comparison_key(ctx, None)[:12]}.json"
    folder.mkdir()
    lock = _write_lock(path, pid=live_pid)
    argv = ["grid", "--model", str(setup["model"]), "--data-root", str(setup["root"]), "--device", "cpu",
            "--n", str(N_TEST), "--attacks", "pgd-linf-sample", "--out", str(tmp_path)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"another deepsloth process (pid {live_pid}" in err and str(lock) in err
    assert sorted(p.name for p in folder.iterdir()) == [lock.name]
    lock.write_text(json.dumps({"pid": 999_999_999, "host": socket.gethostname()}))   # its holder died
    assert main(argv[:-4] + ["--attacks", "clean", "--out", str(tmp_path)]) == 0
    assert path.is_file() and not lock.exists()
    assert "taking over the stale lock" in capsys.readouterr().err


def test_sharded_ranks_lock_separately(setup, tmp_path, live_pid):
    """Rank 0 crafts while rank 1's lock is held elsewhere; assembling waits for whoever holds
    the result's own lock (returns None), and merges once it is free."""
    from deepsloth.attacks.registry import resolve_spec
    from deepsloth.experiments.craft import craft, craft_key, result_stem

    ctx = _ctx(setup)
    spec = resolve_spec("pgd", dataset="cifar10", steps=1)
    ref = craft(ctx, spec, seed=1, batch_size=2).inputs
    stem = result_stem(spec, craft_key(ctx, spec, 1, 2))
    out = tmp_path / "adv"
    out.mkdir()
    other = _write_lock(out / f"{stem}.rank1-of-2", pid=live_pid)
    assert craft(ctx, spec, seed=1, batch_size=2, out_dir=out, shard=(0, 2)) is None   # batches 0 and 2
    assert sorted(p.name for p in (out / f"{stem}.partial").glob("batch-*")) == [
        "batch-000000000.safetensors", "batch-000000004.safetensors"]
    with pytest.raises(LockHeld):
        craft(ctx, spec, seed=1, batch_size=2, out_dir=out, shard=(1, 2))
    other.unlink()
    assembling = _write_lock(out / stem, pid=live_pid)
    assert craft(ctx, spec, seed=1, batch_size=2, out_dir=out, shard=(1, 2)) is None   # someone assembles
    assembling.unlink()
    merged = craft(ctx, spec, seed=1, batch_size=2, out_dir=out, shard=(1, 2))
    assert merged is not None and torch.equal(merged.inputs, ref)
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.json", f"{stem}.safetensors"]


def test_training_run_lock(setup, tmp_path, live_pid, capsys):
    from deepsloth.cli.main import main
    out = tmp_path / "cnn"
    out.mkdir()
    lock = _write_lock(out / "training", pid=live_pid)
    rc = main(["train", "--arch", "resnet56", "--recipe", "fast", "--epochs", "1", "--batch-size", "4",
               "--train-n", "4", "--test-n", "2", "--data-root", str(setup["root"]), "--device", "cpu",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"is writing the training run in {out}" in err
    assert sorted(p.name for p in out.iterdir()) == ["training.lock"] and lock.is_file()
