"""BatchNorm folding for inference (deepsloth.models.fold)."""
import pytest
import torch
from torch import nn

from deepsloth.exits.forward import collect_exit_outputs
from deepsloth.models import create_model
from deepsloth.models.fold import conv_bn_pairs, fold_batchnorm


def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)


@pytest.mark.parametrize("arch", ["resnet56", "mobilenet", "vgg16bn"])
def test_every_bn_of_the_sdns_folds_and_outputs_match(arch):
    model = create_model(arch, "cifar10", sdn=True, seed=0)
    _randomise_bn(model)
    model.train()  # folding must leave the caller's model (and its mode) alone
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(model)
    assert folded is not model and model.training and not folded.training
    assert len(conv_bn_pairs(model)) == n_bn > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # the folded copy keeps the structure the early-exit runtime walks
    assert len(folded.blocks) == len(model.blocks) and len(folded.ics) == len(model.ics)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        for a, b in zip(model(x), folded(x)):  # equal up to float rounding, relative to the scale
            assert (a - b).abs().max() <= 1e-5 * a.abs().max() + 1e-6


class _Branchy(nn.Module):
    """conv1's output feeds BN *and* a residual add: folding it would change the add."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        h = self.conv1(x)
        h = self.bn1(h) + h
        return [self.bn2(self.conv2(h))]


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        h = self.bn(self.conv(x))
        return [h] if h.sum() > 0 else [-h]  # data-dependent control flow


def test_only_safe_pairs_fold_and_untraceable_models_pass_through():
    m = _Branchy()
    _randomise_bn(m)
    m.eval()
    assert conv_bn_pairs(m) == [("conv2", "bn2")]
    folded = fold_batchnorm(m)
    assert isinstance(folded.bn1, nn.BatchNorm2d) and isinstance(folded.bn2, nn.Identity)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(m(x)[0], folded(x)[0], atol=1e-5)
    u = _Untraceable()
    assert conv_bn_pairs(u) == [] and fold_batchnorm(u) is u
    # a BN without running statistics uses batch statistics even in eval: never folded
    s = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False),
                      nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, affine=False)).eval()
    assert conv_bn_pairs(s) == [("2", "3")]
    with torch.no_grad():
        assert torch.allclose(s(x), fold_batchnorm(s)(x), atol=1e-5)


def test_collect_exit_outputs_same_with_and_without_folding():
    model = create_model("resnet56", "cifar10", sdn=True, seed=0)
    _randomise_bn(model)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(2))
    a = collect_exit_outputs(model, images, batch_size=8)
    b = collect_exit_outputs(model, images, batch_size=8, fold_bn=False)
    assert torch.allclose(a.confidence, b.confidence, atol=1e-4)
    assert (a.prediction == b.prediction).float().mean() > 0.99


def test_the_folded_copy_is_reused_until_the_model_changes():
    model = create_model("resnet56", "cifar10", sdn=True, seed=0).eval()
    a = fold_batchnorm(model)
    assert fold_batchnorm(model) is a
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        model.blocks[0].conv1.weight.mul_(2)  # an in-place update (as an optimizer step does)
        b = fold_batchnorm(model)
        assert b is not a
        for u, v in zip(model(x), b(x)):
            assert (u - v).abs().max() <= 1e-5 * u.abs().max() + 1e-6
    model.train()(x)  # a training-mode forward updates the BN running statistics in place
    c = fold_batchnorm(model)
    assert c is not b
    calls = []
    handle = model.blocks[3].register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    d = fold_batchnorm(model)  # a new hook: the copy must carry it
    assert d is not c
    with torch.no_grad():
        d.eval()(x)
    assert calls == [2]
    handle.remove()
    assert fold_batchnorm(model) is not d
