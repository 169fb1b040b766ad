"""The experiments layer: attack specs, content-named resumable/shardable crafting, one
comparison format through audit / attack / grid / the API, and the report.

A ResNet-56 SDN with random weights on synthetic 32x32 data whose labels are the model's own
final-exit predictions (so the final exit is 100% accurate and thresholds always qualify); few
attack steps: seconds per test.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import synthetic_sdn

from deepsloth.attacks.registry import AttackSpec, create_attack, list_attacks, parse_name, resolve_spec
from deepsloth.cli.main import main
from deepsloth.errors import DeepslothError
from deepsloth.io import read_metadata
from deepsloth.experiments.context import load_context
from deepsloth.experiments.craft import craft, craft_key
from deepsloth.experiments.grid import grid_specs, run_grid
from deepsloth.experiments.report import (group_by_model, load_results, render_csv, render_markdown, render_summary,
                                         table)

pytestmark = pytest.mark.usefixtures("one_thread")
N_TEST = 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("experiments")
    root, model_dir, _ = synthetic_sdn(base, 30, N_TEST)
    return {"root": root, "model": model_dir, "base": base}


def ctx_for(setup, n=6):
    return load_context(setup["model"], n=n, device="cpu", data_root=setup["root"])


FAST = {"deepsloth-linf-sample": {"steps": 2}, "pgd-linf-sample": {"steps": 2},
        "deepsloth-linf-universal": {"steps": 2, "n_images": 8}}


# ------------------------------------------------------------------ specs and registry

def test_registry_vocabulary_and_stable_ids():
    assert list_attacks() == ["deepsloth", "pgd", "pgd-avg", "pgd-max", "uap", "adaptive-deepsloth"]
    assert parse_name("deepsloth-universal") == ("deepsloth", "linf", "universal")
    assert parse_name("deepsloth", norm="l2", scope="class") == ("deepsloth", "l2", "class")
    assert parse_name("pgd-avg-l1") == ("pgd-avg", "l1", "sample")
    a = resolve_spec("deepsloth", dataset="cifar10")
    assert a == resolve_spec("deepsloth-linf-sample", dataset="cifar10", eps=8 / 255)
    assert a.id == resolve_spec("deepsloth", dataset="cifar10").id and len(a.id) == 12
    assert a.id != resolve_spec("deepsloth", dataset="cifar10", eps=4 / 255).id
    assert a.params == {"eps": 8 / 255, "steps": 30, "step_size": 0.002, "random_start": True, "dataset": "cifar10"}
    # the id is a hash of the canonical JSON: pinned so that result names stay valid across releases
    assert a.id == "f0f9328fdc58"
    assert AttackSpec.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    tiny = resolve_spec("deepsloth", dataset="tinyimagenet", norm="l1")
    assert tiny.params["eps"] == 16.0 and tiny.params["step_size"] == 1.0
    for bad in (dict(name="pgd", scope="universal"), dict(name="uap", norm="l2"), dict(name="nope"),
                dict(name="deepsloth", n_images=5), dict(name="deepsloth-l2-sample", norm="linf")):
        with pytest.raises(DeepslothError):
            resolve_spec(bad.pop("name"), **bad)


@pytest.mark.parametrize("name", ["pgd", "pgd-avg", "pgd-max", "uap", "deepsloth"])
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("eps", [-0.1, 0.0, float("nan"), float("inf"), 2.0])
def test_bad_eps_is_rejected_by_the_api(name, norm, eps):
    if name == "uap" and norm != "linf":
        pytest.skip("uap is l_inf only")
    if eps == 2.0 and norm != "linf":
        eps = float("inf")   # large budgets are legal in l_2 / l_1; infinity never is
    with pytest.raises(DeepslothError, match="eps"):
        resolve_spec(name, norm=norm, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        create_attack(name, torch.nn.Identity(), norm=norm, eps=eps)


def test_create_attack_rebuilds_the_spec(setup):
    ctx = ctx_for(setup)
    spec = resolve_spec("deepsloth-l2-universal", dataset="cifar10", steps=3)
    atk = create_attack(spec, ctx.model, seed=1)
    assert resolve_spec("deepsloth", norm="l2", scope="universal", dataset="cifar10", steps=3) == spec
    assert atk.config()["steps"] == 3 and atk.seed == 1 and atk.scope == "universal"


# ------------------------------------------------------------------ crafting

def test_same_spec_seed_and_n_give_identical_inputs_everywhere(setup, tmp_path):
    """audit, attack, grid and the Python API craft bit-identical per-sample DeepSloth inputs."""
    n = 6
    spec = resolve_spec("deepsloth", dataset="cifar10")
    ctx = ctx_for(setup, n)
    api = craft(ctx, spec, seed=3, batch_size=4).inputs
    common = ["--model", str(setup["model"]), "--data-root", str(setup["root"]), "--device", "cpu", "--n", str(n),
              "--seed", "3", "--batch-size", "4"]
    assert main(["attack", *common, "--out", str(tmp_path / "attack")]) == 0
    assert main(["grid", *common, "--attacks", "deepsloth-linf-sample", "--out", str(tmp_path / "grid")]) == 0
    assert main(["audit", "--model", str(setup["model"]), "--data", "test", "--data-root", str(setup["root"]),
                 "--device", "cpu", "--n", str(n), "--seed", "3", "--batch-size", "4",
                 "--out", str(tmp_path / "audit")]) == 0
    key = craft_key(ctx, spec, 3, 4)[:12]
    files = [tmp_path / "attack" / "model" / "adversarial", tmp_path / "grid" / "model" / "adversarial",
             tmp_path / "audit" / "results" / "adversarial"]
    from deepsloth.experiments.results import read_result
    for folder in files:
        kind, tensors, record = read_result(folder / f"deepsloth-linf-sample-{key}")
        assert kind == "samples" and record["seed"] == 3 and record["spec"] == spec.to_dict()
        assert torch.equal(tensors["images"], api), folder
    assert float((api - ctx.clean).abs().max()) <= 8 / 255 + 1e-6


def test_different_eps_never_share_a_file(setup, tmp_path):
    common = ["attack", "--model", str(setup["model"]), "--data-root", str(setup["root"]), "--device", "cpu",
              "--n", "4", "--steps", "2", "--out", str(tmp_path)]
    assert main(common + ["--eps", "4/255"]) == 0
    first = sorted((tmp_path / "model" / "adversarial").glob("*.safetensors"))
    before = first[0].read_bytes()
    assert main(common + ["--eps", "8/255"]) == 0
    files = sorted((tmp_path / "model" / "adversarial").glob("*.safetensors"))
    assert len(files) == 2 and first[0] in files and first[0].read_bytes() == before
    from deepsloth.experiments.results import read_result
    eps = sorted(read_result(f)[2]["spec"]["params"]["eps"] for f in files)
    assert eps == [pytest.approx(4 / 255), pytest.approx(8 / 255)]
    assert len(list((tmp_path / "model").glob("deepsloth-linf-sample-*.json"))) == 2
    # the same configuration again reuses the result
    assert main(common + ["--eps", "8/255"]) == 0
    assert len(list((tmp_path / "model" / "adversarial").glob("*.safetensors"))) == 2


def test_sharded_crafting_merges_bit_identically(setup, tmp_path):
    ctx = ctx_for(setup, N_TEST)
    spec = resolve_spec("pgd-avg", dataset="cifar10", steps=2)
    ref = craft(ctx, spec, seed=5, batch_size=3).inputs
    out = tmp_path / "adv"
    assert craft(ctx, spec, seed=5, batch_size=3, out_dir=out, shard=(1, 2)) is None   # rank 1: batches 1, 3
    merged = craft(ctx, spec, seed=5, batch_size=3, out_dir=out, shard=(0, 2))          # rank 0: 0, 2, merges
    assert merged is not None and torch.equal(merged.inputs, ref)
    assert not list(out.glob("*.partial"))
    with pytest.raises(DeepslothError):
        craft(ctx, spec, shard=(2, 2))


def _kill_at_call(monkeypatch, owner, name, call):
    """Make `owner.name` raise KeyboardInterrupt (a kill) at its `call`-th call; returns the call counter."""
    original, calls = getattr(owner, name), {"n": 0}

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(owner, name, dying)
    return calls


def _killed_craft(setup, tmp_path, monkeypatch, at_call):
    """Per-sample crafting of 7 inputs in batches of 3, killed at the attack's `at_call`-th call:
    (ctx, spec, uninterrupted result, call counter, partial folder)."""
    from deepsloth.attacks import DeepSloth
    ctx = ctx_for(setup, 7)
    spec = resolve_spec("deepsloth", dataset="cifar10", steps=2)
    ref = craft(ctx, spec, seed=0, batch_size=3).inputs
    calls = _kill_at_call(monkeypatch, DeepSloth, "__call__", at_call)
    with pytest.raises(KeyboardInterrupt):
        craft(ctx, spec, seed=0, batch_size=3, out_dir=tmp_path)
    return ctx, spec, ref, calls, next(tmp_path.glob("*.partial"))


def test_killed_crafting_resumes_identically(setup, tmp_path, monkeypatch):
    ctx, spec, ref, calls, partial = _killed_craft(setup, tmp_path, monkeypatch, 2)
    assert sorted(p.name for p in partial.glob("batch-*")) == ["batch-000000000.safetensors"]
    calls["n"] = -100
    again = craft(ctx, spec, seed=0, batch_size=3, out_dir=tmp_path)
    assert calls["n"] == -98 and torch.equal(again.inputs, ref) and not partial.exists()


def test_a_damaged_finished_batch_is_crafted_again(setup, tmp_path, monkeypatch):
    """A kept batch file that was truncated (a full disk, a copy cut short) is crafted again, not fatal."""
    ctx, spec, ref, calls, partial = _killed_craft(setup, tmp_path, monkeypatch, 3)
    first, second = sorted(partial.glob("batch-*"))
    second.write_bytes(second.read_bytes()[:100])          # damaged
    calls["n"] = -100
    logged = []
    again = craft(ctx, spec, seed=0, batch_size=3, out_dir=tmp_path, log=logged.append)
    # the damaged batch and the missing one are crafted; the whole one is reused; the result is identical
    assert calls["n"] == -98 and torch.equal(again.inputs, ref) and not partial.exists()
    assert any("damaged" in line and second.name in line for line in logged)


def test_universal_and_class_crafting_records(setup, tmp_path):
    ctx = ctx_for(setup, 6)
    uni = craft(ctx, resolve_spec("deepsloth-universal", dataset="cifar10", steps=2, n_images=8), out_dir=tmp_path)
    assert uni.kind == "universal" and uni.tensors["delta"].shape == (3, 32, 32)
    assert uni.record["craft"]["n_images"] == 8 and uni.record["craft_pool"]["n"] == 30
    assert uni.record["perturbation_norms"]["linf"]["max"] <= 8 / 255 + 1e-6
    cls = craft(ctx, resolve_spec("deepsloth-class", dataset="cifar10", steps=1, n_images=2, eps=4 / 255))
    assert cls.kind == "class-universal" and cls.tensors["deltas"].shape == (10, 3, 32, 32)
    assert cls.record["norms"]["linf"]["max"] <= 4 / 255 + 1e-6
    again = craft(ctx, resolve_spec("deepsloth-universal", dataset="cifar10", steps=2, n_images=8), out_dir=tmp_path)
    assert again.reused and torch.equal(again.inputs, uni.inputs)


def test_killed_class_universal_crafting_resumes_with_the_finished_classes(setup, tmp_path, monkeypatch):
    from deepsloth.attacks import DeepSloth
    ctx = ctx_for(setup, 6)
    spec = resolve_spec("deepsloth-class", dataset="cifar10", steps=2, n_images=3)
    pool = ctx.train_pool()
    y = torch.arange(pool.images.shape[0]) % 4   # four classes with data (the synthetic labels have fewer)
    ref = create_attack(spec, ctx.model, seed=0, device="cpu")(pool.images, y)
    calls = _kill_at_call(monkeypatch, DeepSloth, "_universal", 3)
    atk = create_attack(spec, ctx.model, seed=0, device="cpu")
    atk.resume_dir = tmp_path
    with pytest.raises(KeyboardInterrupt):
        atk(pool.images, y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["class-00000.safetensors", "class-00001.safetensors"]
    calls["n"] = -100
    atk = create_attack(spec, ctx.model, seed=0, device="cpu")
    atk.resume_dir = tmp_path
    again = atk(pool.images, y)
    # only the two classes not finished before the kill are crafted again, and the result is bit-identical
    assert calls["n"] == -98 and torch.equal(again, ref) and atk.last_info["resumed_classes"] == 2
    assert torch.count_nonzero(ref[:4].flatten(1), dim=1).min() > 0 and not ref[4:].any()


def test_class_universal_crafting_keeps_finished_classes_until_the_result_is_written(setup, tmp_path, monkeypatch):
    from deepsloth.attacks import DeepSloth
    ctx = ctx_for(setup, 6)
    spec = resolve_spec("deepsloth-class", dataset="cifar10", steps=1, n_images=2)
    ref = craft(ctx, spec, seed=0)
    original = DeepSloth._universal

    def dying(self, *a, **k):
        original(self, *a, **k)
        raise KeyboardInterrupt   # killed right after the first class with data, before it is kept
    monkeypatch.setattr(DeepSloth, "_universal", dying)
    with pytest.raises(KeyboardInterrupt):
        craft(ctx, spec, seed=0, out_dir=tmp_path)
    partial = next(tmp_path.glob("*.partial"))
    assert partial.is_dir() and not list(partial.glob("class-*"))   # the class was not finished: nothing kept
    monkeypatch.setattr(DeepSloth, "_universal", original)
    again = craft(ctx, spec, seed=0, out_dir=tmp_path)
    assert torch.equal(again.tensors["deltas"], ref.tensors["deltas"]) and not partial.exists()


def test_killed_uap_crafting_resumes_after_its_last_finished_pass(setup, tmp_path, monkeypatch):
    import deepsloth.attacks.uap as uap_module
    ctx = ctx_for(setup, 6)
    # a fooling target no pass reaches here, so every run makes all three passes
    spec = resolve_spec("uap", dataset="cifar10", n_images=6, max_passes=3, max_iter_df=2, target_fooling=1.0)
    ref = craft(ctx, spec, seed=0)
    assert ref.record["craft"]["passes"] == 3 and ref.record["craft"]["fooling_rate"] < 1.0
    original, saves = uap_module.save_tensors, {"n": 0}

    def dying(*a, **k):   # killed right after the second pass is kept
        original(*a, **k)
        saves["n"] += 1
        if saves["n"] == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(uap_module, "save_tensors", dying)
    with pytest.raises(KeyboardInterrupt):
        craft(ctx, spec, seed=0, out_dir=tmp_path)
    partial = next(tmp_path.glob("*.partial"))
    assert read_metadata(partial / "passes.safetensors")["passes"] == "2"
    saves["n"] = -100   # counts the passes kept from now on, kills none
    again = craft(ctx, spec, seed=0, out_dir=tmp_path)
    # only the third pass is made again, and the perturbation is bit-identical to the uninterrupted one
    assert saves["n"] == -99 and torch.equal(again.tensors["delta"], ref.tensors["delta"]) and not partial.exists()
    assert again.record["craft"]["resumed_passes"] == 2 and again.record["craft"]["passes"] == 3


# ------------------------------------------------------------------ grid and report

def _grid(setup, out, cells):
    ctx = ctx_for(setup, 6)
    specs = [resolve_spec(c, dataset="cifar10", **FAST.get(c, {})) for c in cells]
    return run_grid(ctx, specs, out, seed=0, batch_size=4)


def test_killed_grid_resumes_only_missing_cells(setup, tmp_path, monkeypatch):
    cells = ["pgd-linf-sample", "deepsloth-linf-sample", "deepsloth-linf-universal"]
    _grid(setup, tmp_path / "full", cells)
    import deepsloth.experiments.grid as grid_mod
    original, crafted = grid_mod.craft, []

    def dying(ctx, spec, **k):
        if spec.cell == "deepsloth-linf-universal":
            raise KeyboardInterrupt
        crafted.append(spec.cell)
        return original(ctx, spec, **k)

    monkeypatch.setattr(grid_mod, "craft", dying)
    with pytest.raises(KeyboardInterrupt):
        _grid(setup, tmp_path / "resumed", cells)
    assert crafted == ["pgd-linf-sample", "deepsloth-linf-sample"]
    crafted.clear()
    monkeypatch.setattr(grid_mod, "craft", lambda ctx, spec, **k: (crafted.append(spec.cell), original(ctx, spec, **k))[1])
    rows = _grid(setup, tmp_path / "resumed", cells)
    assert crafted == ["deepsloth-linf-universal"]
    assert [r["status"] for r in rows] == ["done before"] * 3 + ["done"]

    def files(root):
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert files(full) == files(resumed)
    for rel in files(full):
        if rel.endswith(".safetensors"):
            assert (full / rel).read_bytes() == (resumed / rel).read_bytes(), rel


def _record(name, cell, final, rads):
    """A hand-made comparison record (only the fields the report reads)."""
    spec = None if cell == "clean" else dict(zip(("attack", "norm", "scope"), parse_name(cell)), params={"eps": 0.03})
    return {"format": "deepsloth-comparison/1", "cell": cell, "label": cell, "attack": spec, "attack_id": cell,
            "seed": 0, "created": "2026-01-01T00:00:00+00:00",
            "model": {"name": name, "arch": "resnet56", "dataset": "cifar10", "exits": 3},
            "data": {"n": 100, "kind": "test", "sha256": "abc"}, "costs": [0.3, 0.6, 1.0],
            "clean": {"final_accuracy": 0.9}, "attacked": {"final_accuracy": final},
            "rad": {k: {"threshold": q, "clean": {"efficacy": ce, "accuracy": 0.88, "exit_counts": [50, 30, 20],
                                                  "mean_cost": 0.5},
                        "attacked": {"efficacy": ae, "accuracy": acc, "exit_counts": [0, 0, 100], "mean_cost": mc},
                        "efficacy_reduction": None if cell == "clean" else (ce - ae) / ce,
                        "latency_amplification": lat} for k, (q, ce, ae, acc, mc, lat) in rads.items()}}


def test_report_rows_from_fixture_directory(tmp_path):
    recs = [_record("m", "clean", 0.9, {"5": (0.8, 0.5, 0.5, 0.88, 0.5, 1.0)}),
            _record("m", "deepsloth-linf-sample", 0.85, {"5": (0.8, 0.5, 0.0, 0.85, 1.0, 2.5)}),
            _record("m", "pgd-linf-sample", 0.02, {"5": (0.8, 0.5, 0.55, 0.1, 0.45, 0.9)})]
    (tmp_path / "m").mkdir()
    for r in recs:
        (tmp_path / "m" / f"{r['cell']}.json").write_text(json.dumps(r))
    (tmp_path / "m" / "not-a-result.json").write_text("[1, 2]")
    models = group_by_model(load_results(tmp_path))
    md = render_markdown(models).splitlines()
    assert md[2] == ("| attack | final acc % | EE acc % @5 | efficacy @5 | eff. red. % @5 | latency x @5 |")
    assert md[4:7] == ["| clean | 90.0 | 88.0 | 0.500 | - | 1.00 |",
                       "| pgd-linf-sample | 2.0 | 10.0 | 0.550 | -10.0 | 0.90 |",
                       "| deepsloth-linf-sample | 85.0 | 85.0 | 0.000 | 100.0 | 2.50 |"]
    csv = render_csv(models).splitlines()
    assert csv[1] == "m,resnet56,cifar10,100,clean,clean,,,5,0.80,0.9000,0.8800,0.5000,0.5000,,0.5000,1.0000"
    assert csv[3] == ("m,resnet56,cifar10,100,deepsloth-linf-sample,deepsloth,linf,sample,5,0.80,0.8500,0.8500,"
                      "0.0000,0.5000,1.0000,1.0000,2.5000")
    assert main(["report", str(tmp_path), "--format", "md", "csv", "tex", "--json"]) == 0
    assert (tmp_path / "tables.tex").read_text().count("\\toprule") == 1
    # one row per model: the defence table's layout
    assert render_summary(models, "md").splitlines() == [
        "| model | training | clean final acc % | clean efficacy @5 | per-sample DeepSloth efficacy @5 | reduction % | "
        "universal DeepSloth efficacy @5 | reduction % | final acc % under PGD |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        "| m | backbone AT: none; IC term: none | 90.0 | 0.500 | 0.000 | 100.0 | - | - | 2.0 |"]
    assert render_summary(models, "csv").splitlines()[1] == \
        "m,backbone AT: none; IC term: none,5,0.9000,0.5000,0.0000,1.0000,,,0.0200"
    assert (tmp_path / "summary.csv").read_text() == render_summary(models, "csv")
    assert (tmp_path / "summary.tex").read_text().count("\\toprule") == 1
    assert (tmp_path / "eec_grid.png").stat().st_size > 10_000


def test_eec_grid_layout_puts_rad_budgets_side_by_side_when_there_is_one_norm():
    from deepsloth.experiments.figures import eec_panels

    two = {"5": (0.8, 0.5, 0.5, 0.88, 0.5, 1.0), "15": (0.7, 0.6, 0.6, 0.8, 0.4, 1.0)}
    linf = {n: {"clean": _record(n, "clean", 0.9, two),
                "ds": _record(n, "deepsloth-linf-sample", 0.8, two)} for n in ("a", "b")}
    assert eec_panels(linf) == [("a", [("5", "linf"), ("15", "linf")]), ("b", [("5", "linf"), ("15", "linf")])]
    linf["b"]["l2"] = _record("b", "deepsloth-l2-universal", 0.8, two)
    assert eec_panels(linf) == [("a", [("5", "linf")]), ("a", [("15", "linf")]),
                                ("b", [("5", "linf"), ("5", "l2")]), ("b", [("15", "linf"), ("15", "l2")])]


def test_eec_grid_draws_a_budget_that_only_some_records_have(tmp_path):
    """Records of one model may differ in their budgets (a transfer record evaluated at an extra RAD): the
    panel of that budget takes its threshold from the records that have it."""
    from deepsloth.experiments.figures import eec_panels, plot_eec_grid
    five = {"5": (0.8, 0.5, 0.5, 0.88, 0.5, 1.0)}
    extra = {"1": (0.9, 0.4, 0.1, 0.8, 0.9, 2.0), **five}
    models = {"m": {"clean": _record("m", "clean", 0.9, five), "ds": _record("m", "deepsloth-linf-sample", 0.8, extra)}}
    assert eec_panels(models) == [("m", [("1", "linf"), ("5", "linf")])]
    path = plot_eec_grid(models, tmp_path / "eec.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_cells_and_report_end_to_end(setup, tmp_path, capsys):
    assert [s.cell for s in grid_specs("all")][:4] == ["pgd-linf-sample", "pgd-avg-linf-sample",
                                                      "pgd-max-linf-sample", "uap-linf-universal"]
    assert len(grid_specs("all")) == 13 and len(grid_specs("all", norms=["l1"])) == 3
    assert [s.cell for s in grid_specs(["deepsloth"], norms=["linf"])] == [
        "deepsloth-linf-sample", "deepsloth-linf-universal", "deepsloth-linf-class"]
    _grid(setup, tmp_path, ["pgd-linf-sample", "deepsloth-linf-sample"])
    rec = json.loads(next((tmp_path / "model").glob("deepsloth-linf-sample-*.json")).read_text())
    assert rec["format"] == "deepsloth-comparison/1" and set(rec["rad"]) == {"5", "15"}
    assert rec["model"]["weights_sha256"] and rec["norms"]["linf"]["max"] <= 8 / 255 + 1e-6
    r5 = rec["rad"]["5"]
    assert sum(r5["attacked"]["exit_counts"]) == 6 and r5["latency_amplification"] > 0
    header, rows = table(group_by_model(load_results(tmp_path))["model"])
    assert [r[0] for r in rows] == ["clean", "PGD (per-sample, l_inf)", "DeepSloth (per-sample, l_inf)"]


def test_thresholds_of_zoo_models_never_go_into_the_package(monkeypatch, tmp_path):
    from deepsloth.exits.calibrate import _candidate_files
    from deepsloth.models.zoo import ZOO_DIR
    monkeypatch.setenv("DEEPSLOTH_DATA", str(tmp_path))
    files = _candidate_files(ZOO_DIR / "resnet56_sdn_cifar10", "0" * 64)
    assert files == [tmp_path / "thresholds" / ("0" * 32 + ".json")]
    assert _candidate_files(tmp_path / "m", "0" * 64)[0] == tmp_path / "m" / "thresholds.json"


# ------------------------------------------------------------------ bad values

@pytest.mark.parametrize("argv", [
    ["audit", "--rad", "150"], ["audit", "--rad", "0"], ["audit", "--n", "-3"],
    ["attack", "--model", "M", "--eps", "-0.1"], ["attack", "--model", "M", "--eps", "nan"],
    ["attack", "--model", "M", "--attack", "nope"], ["attack", "--model", "M", "--rad", "150"],
    ["grid", "--model", "M", "--attacks", "nope"], ["grid", "--model", "M", "--rad", "-5"],
    ["evaluate", "--model", "M", "--rad", "100"], ["latency", "--model", "M", "--tx-bytes", "-5"],
    ["latency", "--model", "M", "--bandwidth-mbps", "0"], ["report", "/nonexistent/folder"],
])
def test_bad_values_are_one_line_errors(setup, argv, capsys):
    argv = [str(setup["model"]) if a == "M" else a for a in argv]
    if argv[0] != "report":
        argv += ["--data-root", str(setup["root"]), "--device", "cpu"]
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "error" in err


@pytest.mark.parametrize("attack", ["pgd", "pgd-avg", "pgd-max", "uap", "deepsloth"])
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("eps", ["-0.1", "0", "nan", "2"])
def test_bad_eps_is_rejected_by_the_cli(setup, tmp_path, capsys, attack, norm, eps):
    if attack == "uap" and norm != "linf":
        pytest.skip("uap is l_inf only")
    if eps == "2" and norm != "linf":
        eps = "inf"   # large budgets are legal in l_2 / l_1; infinity never is
    try:
        rc = main(["attack", "--model", str(setup["model"]), "--attack", attack, "--norm", norm, "--eps", eps,
                   "--data-root", str(setup["root"]), "--device", "cpu", "--out", str(tmp_path / "out")])
    except SystemExit as exc:   # argparse's own refusal
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "eps" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
