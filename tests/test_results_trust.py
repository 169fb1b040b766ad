"""What is on disk is verified when it is loaded: attack results are checked against their tensors and
the selected clean images, unknown formats are refused, and no command replaces an attack record."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import synthetic_sdn

from deepsloth.cli.main import main
from deepsloth.errors import DeepslothError
from deepsloth.experiments.context import load_context
from deepsloth.experiments.results import load_result, read_result, save_result
from deepsloth.io import load_tensors, save_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A per-sample and a universal DeepSloth result on an untrained SDN and synthetic data."""
    base = tmp_path_factory.mktemp("trust")
    root, _, _ = synthetic_sdn(base, 20, 8)
    common = ["--model", str(base / "model"), "--data-root", str(root), "--device", "cpu", "--n", "8"]
    for extra in (["--steps", "2"], ["--scope", "universal", "--steps", "1", "--craft-n", "4"]):
        assert main(["attack", *common, "--out", str(base / "res"), *extra]) == 0
    folder = base / "res" / "model" / "adversarial"
    files = {p.name.split("-")[2]: p for p in folder.glob("*.safetensors")}
    return {"base": base, "root": root, "common": common, "sample": files["sample"],
            "universal": files["universal"], "ctx": load_context(str(base / "model"), n=8, data_root=str(root),
                                                                 device="cpu")}


def _copy(src, dest, edit_tensors=None, edit_record=None):
    kind, tensors, record = read_result(src)
    if edit_tensors:
        tensors = edit_tensors(dict(tensors))
    if edit_record:
        record = edit_record(dict(record))
    return save_result(dest, kind, tensors, record)


def test_evaluate_does_not_replace_the_attack_record_it_reads(made, capsys):
    """`evaluate --inputs R.safetensors --out R.json` used to replace the attack record by a comparison."""
    result = made["sample"]
    record = result.with_suffix(".json")
    before = record.read_bytes()
    rc = main(["evaluate", *made["common"], "--inputs", str(result), "--out", str(record)])
    err = capsys.readouterr().err
    assert rc == 2 and "is a file of the attack result" in err and err.count("\n") == 1
    assert record.read_bytes() == before
    rc = main(["evaluate", *made["common"], "--inputs", str(result), "--out", str(result)])
    assert rc == 2 and result.is_file()


def test_norms_come_from_the_tensors_not_from_the_record(made, tmp_path):
    ctx = made["ctx"]
    crafted = load_result(ctx, made["sample"])
    assert crafted.record["norms"]["linf"]["max"] <= 8 / 255 + 1e-6
    # the record's norms are edited: what is reported is still measured from the tensors
    path = _copy(made["sample"], tmp_path / "edited-norms",
                 edit_record=lambda r: dict(r, norms={"linf": {"max": 123.0, "mean": 123.0}}))
    assert load_result(ctx, path).record["norms"] == crafted.record["norms"]


def test_images_replaced_by_noise_are_refused(made, tmp_path):
    noise = _copy(made["sample"], tmp_path / "noise",
                  edit_tensors=lambda t: dict(t, images=torch.rand(t["images"].shape, generator=torch.Generator()
                                                                   .manual_seed(1))))
    with pytest.raises(DeepslothError, match="beyond the budget"):
        load_result(made["ctx"], noise)


def test_a_universal_delta_beyond_its_budget_is_refused(made, tmp_path):
    big = _copy(made["universal"], tmp_path / "big", edit_tensors=lambda t: dict(t, delta=torch.full_like(t["delta"], 5.0)))
    with pytest.raises(DeepslothError, match=r"linf norm up to 5.*beyond the budget 0.0313"):
        load_result(made["ctx"], big)
    assert load_result(made["ctx"], made["universal"]).kind == "universal"


def test_per_sample_indices_are_checked_against_the_selected_images(made, tmp_path):
    moved = _copy(made["sample"], tmp_path / "moved",
                  edit_tensors=lambda t: dict(t, indices=t["indices"] + 100))
    with pytest.raises(DeepslothError, match="indices are not the positions 0..7"):
        load_result(made["ctx"], moved)
    floats = _copy(made["sample"], tmp_path / "float-labels",
                   edit_tensors=lambda t: dict(t, labels=t["labels"].float()))
    with pytest.raises(DeepslothError, match="labels"):
        load_result(made["ctx"], floats)


def test_an_unknown_record_format_is_refused(made, tmp_path, capsys):
    future = _copy(made["sample"], tmp_path / "future", edit_record=lambda r: dict(r, format="deepsloth-attack/99"))
    with pytest.raises(DeepslothError, match="deepsloth-attack/99.*not an attack record this version reads"):
        read_result(future)
    rc = main(["evaluate", *made["common"], "--inputs", str(future)])
    err = capsys.readouterr().err
    assert rc == 2 and "deepsloth-attack/99" in err and err.count("\n") == 1
    # the tensors alone (no record) still load, by their names
    bare = tmp_path / "bare.safetensors"
    save_tensors(bare, load_tensors(made["sample"]))
    assert read_result(bare)[0] == "samples" and json.loads(made["sample"].with_suffix(".json").read_text())
