"""Interoperability: single-output exit views, the exit-aware forward, our PGD in torchattacks'
shape, and torchattacks / ART / foolbox running on the view (each where it is installed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepsloth.attacks import PGD, UAP, DeepSloth
from deepsloth.attacks.objectives import exit_ce, exits_needed, final_ce, mean_ce
from deepsloth.models import create_model, exit_view

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return create_model("resnet56", "cifar10", sdn=True, seed=0).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 3, 32, 32, generator=g), torch.arange(6) % 10


class ListOnly(nn.Module):
    """The same network without `forward_exits`: attacks must run it whole."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, x):
        return self.inner(x)


def test_exit_views_return_the_exit_logits(model, batch):
    x, _ = batch
    with torch.no_grad():
        full = model(x)
        assert torch.equal(exit_view(model)(x), full[-1])
        assert torch.equal(exit_view(model, "final")(x), full[-1])
        assert torch.equal(exit_view(model, 3)(x), full[3])
        assert torch.equal(exit_view(model, -2)(x), full[-2])
        assert torch.equal(exit_view(model, "avg")(x), torch.stack(full).mean(0))
        assert torch.equal(exit_view(ListOnly(model), 3)(x), full[3])
        assert [o.shape for o in model.forward_exits(x, 4)] == [o.shape for o in full[:5]]
    with pytest.raises(ValueError):
        exit_view(model, "max")


def test_objectives_declare_their_exits():
    assert exits_needed(final_ce) == "final" and exits_needed(mean_ce) == "all"
    assert exits_needed(exit_ce(3, 28)) == 3 and exits_needed(exit_ce(27, 28)) == "final"
    assert exits_needed(exit_ce(3)) == "all"    # without the exit count it cannot know


@pytest.mark.parametrize("objective", ["final", "max"])
def test_exit_aware_pgd_equals_the_full_network_path(model, batch, objective):
    x, y = batch
    fast = PGD(model, objective=objective, steps=3, step_size=2 / 255, seed=1)(x, y)
    full = PGD(ListOnly(model), objective=objective, steps=3, step_size=2 / 255, seed=1)(x, y)
    assert torch.equal(fast, full)


def test_exit_aware_uap_equals_the_full_network_path(model, batch):
    x, _ = batch
    a = UAP(model, n_images=6, max_passes=1, max_iter_df=2, seed=0)(x)
    b = UAP(ListOnly(model), n_images=6, max_passes=1, max_iter_df=2, seed=0)(x)
    assert torch.equal(a, b)


def test_pgd_accepts_torchattacks_arguments(model, batch):
    x, y = batch
    a = PGD(model, eps=8 / 255, alpha=2 / 255, steps=2, random_start=False)
    assert a.step_size == a.alpha == 2 / 255
    with pytest.raises(ValueError):
        PGD(model, alpha=0.1, step_size=0.2)
    t = PGD(model, alpha=2 / 255, steps=2).set_mode_targeted_by_label()
    assert t.targeted and t.config()["targeted"] is True
    with pytest.raises(ValueError, match="target"):
        t(x)
    # normalisation: attacking a model that expects (x - m) / s equals attacking the model with
    # the normalisation folded in front, in pixel space
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    class Denorm(nn.Module):   # takes normalised inputs, as many torchvision-era models do
        def forward(self, z):
            return model(z * s + m)

    class Folded(nn.Module):
        def forward(self, x):
            return Denorm()((x - m) / s)

    a1 = PGD(Denorm(), steps=2, seed=0).set_normalization_used(mean, std)(x, y)
    a2 = PGD(Folded(), steps=2, seed=0)(x, y)
    assert torch.equal(a1, a2) and float((a1 - x).abs().max()) <= 8 / 255 + 1e-6
    # ART-style numpy entry point
    out = PGD(model, steps=1).generate(x.numpy(), np.eye(10)[y.numpy()])
    assert isinstance(out, np.ndarray) and out.shape == x.shape


def test_torchattacks_pgd_on_the_view_equals_ours(model, batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = batch
    theirs = torchattacks.PGD(exit_view(model), eps=8 / 255, alpha=2 / 255, steps=3, random_start=False)(x, y)
    ours = PGD(model, eps=8 / 255, alpha=2 / 255, steps=3, random_start=False, reduction="mean")(x, y)
    assert torch.equal(theirs, ours)
    # targeted, torchattacks style
    target = (y + 1) % 10
    ta = torchattacks.PGD(exit_view(model), eps=8 / 255, alpha=2 / 255, steps=3, random_start=False)
    ta.set_mode_targeted_by_label(quiet=True)
    ours_t = PGD(model, eps=8 / 255, alpha=2 / 255, steps=3, random_start=False, reduction="mean",
                 targeted=True)(x, target)
    assert torch.equal(ta(x, target), ours_t)


def test_art_and_foolbox_run_on_the_view(model, batch):
    x, y = batch
    view = exit_view(model).eval()
    ran = 0
    try:
        from art.attacks.evasion import FastGradientMethod
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        pass
    else:
        clf = PyTorchClassifier(model=view, loss=nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                                clip_values=(0.0, 1.0), device_type="cpu")
        preds = clf.predict(x.numpy())
        assert np.allclose(preds, view(x).detach().numpy(), atol=1e-5)
        adv = FastGradientMethod(clf, eps=8 / 255).generate(x.numpy())
        assert np.abs(adv - x.numpy()).max() <= 8 / 255 + 1e-6
        ran += 1
    try:
        import foolbox as fb
    except ImportError:
        pass
    else:
        fmodel = fb.PyTorchModel(view, bounds=(0, 1), device="cpu")
        _, clipped, success = fb.attacks.LinfPGD(steps=3)(fmodel, x, y, epsilons=8 / 255)
        assert clipped.shape == x.shape and float((clipped - x).abs().max()) <= 8 / 255 + 1e-6
        assert success.shape == (6,)
        ran += 1
    if not ran:
        pytest.skip("neither ART nor foolbox is installed")


def test_targeted_pgd_reaches_the_target_on_a_trained_model():
    from deepsloth.data.bundled import load_bundled
    from deepsloth.models.zoo import DEFAULT_MODEL, zoo_names
    from deepsloth.models import create_model
    if DEFAULT_MODEL not in zoo_names():
        pytest.skip("no shipped model")
    model = create_model(DEFAULT_MODEL)
    _, _ = model.meta, model.model_dir
    test = load_bundled("test")
    x = test.images[:24].float() / 255
    target = (test.labels[:24] + 3) % 10
    adv = PGD(model, eps=8 / 255, step_size=2 / 255, steps=10, targeted=True)(x, target)
    with torch.no_grad():
        hit = (model.forward_exits(adv, "final")[-1].argmax(1) == target).float().mean().item()
    assert hit >= 0.75, hit
    assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6
