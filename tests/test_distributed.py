"""torch.distributed on CPU (gloo, 2 processes launched with torchrun): DDP training matches one
process, resumes after a kill; sharded crafting and evaluation equal the one-process results; a rank
that raises fails the whole command with a clear error within the timeout."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import synthetic_sdn

from deepsloth.cli.main import main
from deepsloth.models import create_model, save_model_dir

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
TOL = 1e-5   # DDP vs one process: same math, different float summation order


def torchrun(*args, env=None, timeout=180):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "deepsloth", *args]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", DEEPSLOTH_NO_PROGRESS="1", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


def why(r) -> str:
    """A failed torchrun's stderr without the launcher's own traceback, so a rank's message survives."""
    return "\n".join(line for line in r.stderr.splitlines() if "torch/distributed" not in line)[-4000:]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    synthetic_sdn(base, 32, 10, model_dir=base / "sdn")
    save_model_dir(base / "cnn", create_model("resnet56", "cifar10", sdn=False, seed=0),
                   {"arch": "resnet56", "dataset": "cifar10", "mode": "cnn", "num_classes": 10, "input_size": 32})
    return base


def train_args(env, out, epochs=1):
    return ["train", "--arch", "resnet56", "--mode", "ic-only", "--from", str(env / "cnn"), "--recipe", "fast",
            "--epochs", str(epochs), "--batch-size", "16", "--out", str(out), "--data-root", str(env / "data"),
            "--device", "cpu"]


def same_weights(a, b, tol=TOL):
    ma = create_model(a)
    _ = ma.meta
    mb = create_model(b)
    _ = mb.meta
    return max(float((x - y).abs().max()) for x, y in zip(ma.state_dict().values(), mb.state_dict().values())) <= tol


def test_ddp_training_matches_one_process_and_resumes(env, tmp_path):
    assert main(train_args(env, tmp_path / "one", epochs=2)) == 0
    r = torchrun(*train_args(env, tmp_path / "ddp", epochs=2))
    assert r.returncode == 0, why(r)
    assert r.stdout.count("saved ic-only model") == 1          # only rank 0 reports
    _ = create_model(tmp_path / "ddp")
    meta = _.meta
    assert meta["distributed"] == {"world_size": 2, "backend": "gloo", "sync_bn": False}
    assert same_weights(tmp_path / "one", tmp_path / "ddp")
    # killed after the first epoch's checkpoint, resumed under DDP: the weights of the uninterrupted run
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "deepsloth", *train_args(env, tmp_path / "killed", epochs=2)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1", DEEPSLOTH_NO_PROGRESS="1"))
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "checkpoint.json").is_file() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode != 0 and not (tmp_path / "killed" / "model.json").exists()
    r = torchrun(*train_args(env, tmp_path / "killed", epochs=2), "--resume")
    assert r.returncode == 0, why(r)
    assert same_weights(tmp_path / "ddp", tmp_path / "killed", tol=0.0)


def test_sharded_crafting_and_grid_equal_one_process(env, tmp_path):
    common = ["--model", str(env / "sdn"), "--data-root", str(env / "data"), "--device", "cpu", "--first-n", "10",
              "--batch-size", "3"]
    assert main(["attack", *common, "--steps", "2", "--out", str(tmp_path / "one")]) == 0
    r = torchrun("attack", *common, "--steps", "2", "--out", str(tmp_path / "two"))
    assert r.returncode == 0, why(r)

    def files(root):
        return {p.relative_to(root).as_posix(): p for p in root.rglob("*.safetensors")}

    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 1
    for k in one:
        assert one[k].read_bytes() == two[k].read_bytes()        # bit for bit
    r = torchrun("grid", *common, "--attacks", "pgd", "deepsloth-linf-universal", "--out", str(tmp_path / "g2"))
    assert r.returncode == 0, why(r)
    assert main(["grid", *common, "--attacks", "pgd", "deepsloth-linf-universal", "--out", str(tmp_path / "g1")]) == 0
    g1, g2 = files(tmp_path / "g1"), files(tmp_path / "g2")
    assert g1.keys() == g2.keys() and len(g1) == 2
    assert all(g1[k].read_bytes() == g2[k].read_bytes() for k in g1)
    j1 = sorted(p.relative_to(tmp_path / "g1").as_posix() for p in (tmp_path / "g1").glob("*/*.json"))
    j2 = sorted(p.relative_to(tmp_path / "g2").as_posix() for p in (tmp_path / "g2").glob("*/*.json"))
    assert j1 == j2 and len(j1) == 3


def test_sharded_evaluation_gives_identical_numbers(env, capsys):
    args = ["evaluate", "--model", str(env / "sdn"), "--data-root", str(env / "data"), "--device", "cpu",
            "--eval-batch-size", "3", "--json"]
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)
    r = torchrun(*args)
    assert r.returncode == 0, why(r)
    two = json.loads(r.stdout)
    for key in ("clean", "attacked", "rad"):
        assert one[key] == two[key]


def test_a_rank_that_raises_fails_the_command(env, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import deepsloth.experiments.craft as c\n"
        "    def broken(*a, **k):\n"
        "        raise RuntimeError('injected failure on rank 1')\n"
        "    c._craft_batches = broken\n")
    t0 = time.time()
    r = torchrun("attack", "--model", str(env / "sdn"), "--data-root", str(env / "data"), "--device", "cpu",
                 "--first-n", "6", "--steps", "1", "--out", str(tmp_path / "out"),
                 env={"PYTHONPATH": str(hook) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                      "DEEPSLOTH_DIST_TIMEOUT": "60"}, timeout=150)
    assert r.returncode != 0 and time.time() - t0 < 120
    assert "rank 1 failed" in r.stderr and "injected failure on rank 1" in r.stderr
    results = [p for p in tmp_path.joinpath("out").rglob("*.safetensors") if ".partial" not in str(p)]
    assert not results   # no result; rank 0's finished batches stay in <stem>.partial/ for a rerun


def test_close_waits_for_the_other_ranks_only_on_the_normal_path(monkeypatch):
    import torch.distributed as td

    from deepsloth.distributed import Dist
    calls = []
    monkeypatch.setattr(td, "is_initialized", lambda: True)
    monkeypatch.setattr(td, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(td, "destroy_process_group", lambda: calls.append("destroy"))
    d = Dist(rank=1, world=2, backend="gloo")
    d.close()
    assert calls == ["barrier", "destroy"]
    calls.clear()
    d.close(sync=False)   # an error path: no waiting for a peer that may be gone
    assert calls == ["destroy"]
    calls.clear()

    def dead_peer():
        raise RuntimeError("Connection closed by peer")
    monkeypatch.setattr(td, "barrier", dead_peer)
    d.close()   # the peer is gone: torn down all the same, no error
    assert calls == ["destroy"]
    Dist().close()   # one process: nothing to tear down
    assert calls == ["destroy"]
