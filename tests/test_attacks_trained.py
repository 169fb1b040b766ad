"""Acceptance on the trained ResNet-56 SDN (CIFAR-10) from the zoo, first 200 test images:

* per-sample DeepSloth l_inf at the SPEC defaults (eps 8/255, 30 steps of 0.002, random
  start) reduces efficacy at RAD 5% by at least 90% relative to clean;
* PGD (final exit, SPEC defaults: eps 8/255, 20 steps of 0.001) cuts final-exit accuracy
  below 20%.

Thresholds are calibrated on the same clean images (SPEC 4.2) and held fixed for the attacked
ones. Skipped while the zoo entry is absent.
"""
from __future__ import annotations

import pytest
import torch

from deepsloth.errors import DeepslothError

ZOO_NAME = "resnet56_sdn_cifar10"
N = 200

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def trained():
    from deepsloth.models.zoo import zoo_names
    from deepsloth.models import create_model
    if ZOO_NAME not in zoo_names():
        pytest.skip(f"zoo model {ZOO_NAME!r} is not installed yet (the trained ResNet-56 SDN ships "
                    f"with the zoo; available: {', '.join(zoo_names()) or 'none'})")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = create_model(ZOO_NAME, device=device)
    return model, model.meta, device


@pytest.fixture(scope="module")
def cifar_test(request):
    from deepsloth.data import load_dataset
    try:
        ds = load_dataset("cifar10", "test")          # an imported cache ($DEEPSLOTH_DATA)
    except DeepslothError:
        ds = load_dataset("cifar10", "test", request.getfixturevalue("cifar10_root"))
    ds = ds.subset(N)
    return ds.images.float() / 255, ds.labels


@pytest.fixture(scope="module")
def evaluation(trained, cifar_test):
    from deepsloth.exits.calibrate import calibrate_thresholds
    from deepsloth.exits.evaluate import evaluate_exits, exit_costs_for
    from deepsloth.exits.forward import collect_exit_outputs
    model, meta, device = trained
    x, y = cifar_test
    costs = exit_costs_for(model, meta, tuple(x.shape[1:])).normalised
    clean_out = collect_exit_outputs(model, x, batch_size=N, device=device)
    thresholds = calibrate_thresholds(clean_out, y, rads=(5, 15))
    clean = evaluate_exits(clean_out, y, costs, thresholds)

    def run(x_adv):
        out = collect_exit_outputs(model, x_adv, batch_size=N, device=device)
        return evaluate_exits(out, y, costs, thresholds)

    return clean, run


def test_deepsloth_linf_defaults_remove_early_exits(trained, cifar_test, evaluation):
    from deepsloth.attacks import DeepSloth
    from deepsloth.metrics.efficacy import efficacy_reduction
    model, meta, device = trained
    x, y = cifar_test
    atk = DeepSloth(model, norm="linf", dataset="cifar10", seed=0)
    assert atk.config()["steps"] == 30 and atk.config()["step_size"] == 0.002
    x_adv = atk(x.to(device)).cpu()
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    clean, run = evaluation
    adv = run(x_adv)
    eff_clean, eff_adv = clean["rad"]["5"]["efficacy"], adv["rad"]["5"]["efficacy"]
    reduction = efficacy_reduction(eff_clean, eff_adv)
    assert reduction >= 0.90, (eff_clean, eff_adv, reduction)


def test_pgd_final_defaults_cut_final_accuracy(trained, cifar_test, evaluation):
    from deepsloth.attacks import PGD
    model, meta, device = trained
    x, y = cifar_test
    x_adv = PGD(model, objective="final", seed=0)(x.to(device), y.to(device)).cpu()
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    clean, run = evaluation
    adv = run(x_adv)
    assert clean["final_accuracy"] > 0.5
    assert adv["final_accuracy"] < 0.20, adv["final_accuracy"]
