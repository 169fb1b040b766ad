"""Exits on any model (`attach_exits`): a torchvision-style ResNet and a small ViT built here get one
logits tensor per exit, really stop early in the runtime, agree with the batched evaluation, keep
their backbone frozen under IC-only training, and are left unchanged when the exits are removed."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from byom_nets import tiny_resnet
from conftest import check_runtime_agrees, colour_images

from deepsloth.exits.cost import measure_exit_costs
from deepsloth.exits.forward import collect_exit_outputs
from deepsloth.exits.runtime import EarlyExitRunner, measure_exit_times
from deepsloth.models.attach import AttachedExits, TokenHead, attach_exits
from deepsloth.train.loop import make_loss, set_train_mode, trainable_parameters
from deepsloth.train.recipes import default_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


# -- two user models, written the way torchvision / timm write them -------------------------------------------

def TinyResNet():
    """conv1 -> layer1..layer3 -> avgpool -> fc, as torchvision's ResNet (the one of byom_nets), 4 classes."""
    return tiny_resnet(classes=4)


class Block(nn.Module):
    def __init__(self, dim, heads=2):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(),
                                                                 nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch 8 on 32x32, a CLS token, 4 blocks, as timm's VisionTransformer."""

    def __init__(self, classes=4, dim=16, depth=4):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1) + self.pos
        for blk in self.blocks:
            t = blk(t)
        return self.head(self.norm(t)[:, 0])


def images(n, seed=0):
    return colour_images(n, seed, noise=0.4)


def trained(model: AttachedExits, steps=15, mode="sdn") -> AttachedExits:
    """A few steps of training (all exits, or IC-only), so the exits' confidences spread out."""
    torch.manual_seed(0)
    x, y = images(256)
    params = trainable_parameters(model, mode)
    opt = torch.optim.Adam(params, lr=3e-3)
    loss_fn = make_loss("ic-only" if mode == "ic-only" else "cnn", default_recipe("resnet56", "cnn", "fast"), None)
    set_train_mode(model, mode)
    for step in range(steps):
        xb, yb = x[step * 16 % 256:][:64].float() / 255, y[step * 16 % 256:][:64]
        outs = model(xb)
        loss = loss_fn(outs, yb, 0) if mode == "ic-only" else sum(F.cross_entropy(o, yb) for o in outs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    return trained(attach_exits(TinyResNet(), at=["layer1", "layer2"], num_classes=4, seed=0))


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(2)
    return trained(attach_exits(TinyViT(), at=["blocks.0", "blocks.1", "blocks.2"], num_classes=4, seed=0))


def test_one_logits_tensor_per_exit_and_the_right_heads(resnet, vit):
    x = torch.rand(5, 3, 32, 32)
    for model, k in ((resnet, 3), (vit, 4)):
        outs = model(x)
        assert len(outs) == k == model.num_exits and all(o.shape == (5, 4) for o in outs)
        assert torch.equal(outs[-1], model.net(x))   # the final exit is the model's own output
    assert all(isinstance(h, TokenHead) for h in vit.ics)
    assert not any(isinstance(h, TokenHead) for h in resnet.ics)


def test_cost_is_charged_where_each_exit_reads_the_backbone(vit):
    cost = measure_exit_costs(vit, (3, 32, 32)).normalised
    assert len(cost) == 4 and cost[-1] == 1.0 and all(a < b for a, b in zip(cost, cost[1:]))
    # identical blocks, each followed by an identical head: every exit adds the same cost to the previous one
    steps = [b - a for a, b in zip(cost, cost[1:3])]
    assert abs(steps[0] - steps[1]) < 1e-9 and cost[0] > steps[0]   # the first also pays the patch embedding


@pytest.mark.parametrize("which", ["resnet", "vit"])
@pytest.mark.parametrize("batch_size", [1, 7, 40])
def test_runtime_stops_early_and_agrees_with_the_batched_evaluation(which, batch_size, request):
    x, _ = images(40, seed=3)
    assert len(check_runtime_agrees(request.getfixturevalue(which), x, [0.25, 0.5, 0.75], batch_size)) >= 3


def test_later_blocks_do_not_run_for_inputs_that_exit(vit):
    calls = []
    runner = EarlyExitRunner(vit, 0.0)   # the first exit always fires
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: calls.append((k, o.shape[0])))
             for k, b in enumerate(runner.model.net.blocks)]
    try:
        res = runner.run(images(6)[0], batch_size=1, warmup=0)
    finally:
        for h in hooks:
            h.remove()
    assert res.exit_index.tolist() == [0] * 6 and calls == [(0, 1)] * 6
    # batched, with some inputs leaving: a later block sees only the inputs still running
    calls.clear()
    x, _ = images(40, seed=3)
    q = float(collect_exit_outputs(vit, x).confidence[0].median())
    runner = EarlyExitRunner(vit, q)
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: calls.append((k, o.shape[0])))
             for k, b in enumerate(runner.model.net.blocks)]
    try:
        res = runner.run(x, batch_size=40, warmup=0)
    finally:
        for h in hooks:
            h.remove()
    left_at_first = int((res.exit_index == 0).sum())
    assert 0 < left_at_first < 40 and calls[0] == (0, 40) and calls[1] == (1, 40 - left_at_first)
    times = measure_exit_times(vit, x[:3], warmup=0)
    assert times["method"] == "measured" and len(times["cumulative_seconds"]) == 4


def test_ic_only_training_leaves_the_backbone_bit_identical():
    torch.manual_seed(3)
    net = TinyResNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = attach_exits(net, at=["layer1", "layer2", "layer3"], num_classes=4, seed=0)
    heads_before = [p.clone() for p in model.ics.parameters()]
    trained(model, steps=5, mode="ic-only")
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)          # weights and BN statistics
    assert any(not torch.equal(a, b) for a, b in zip(heads_before, model.ics.parameters()))


def test_hooks_are_removed_and_the_model_is_unchanged():
    torch.manual_seed(4)
    net = TinyViT().eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
    model = attach_exits(net, at=["blocks.1", "blocks.3"], num_classes=4)
    model(x)
    EarlyExitRunner(model, 0.5).run((x * 255).to(torch.uint8), batch_size=2, warmup=0)
    original = model.remove()
    assert original is net
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    with torch.no_grad():
        assert torch.equal(net(x), ref)


def test_bad_exit_points_are_clear_errors():
    with pytest.raises(ValueError, match="no module named layer9"):
        attach_exits(TinyResNet(), at=["layer9"], num_classes=4)
    with pytest.raises(ValueError, match="order the forward runs them"):
        attach_exits(TinyResNet(), at=["layer2", "layer1"], num_classes=4)
    with pytest.raises(ValueError, match="named twice"):
        attach_exits(TinyResNet(), at=["layer1", "layer1"], num_classes=4)


def test_the_bring_your_own_model_example_runs_as_written():
    """docs/python-api.md's example, executed as written: its printed shapes, exit counts and agreement."""
    import contextlib
    import io
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "python-api.md").read_text()
    section = text[text.index("## Bring your own model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/python-api.md (Bring your own model)", "exec"), {"__name__": "byom_example"})
    lines = out.getvalue().splitlines()
    assert lines[0] == "[(16, 10), (16, 10), (16, 10)]"
    assert lines[1] == "[9, 0, 7] 0"   # the doc's claim: 9 of 16 leave at the first exit, none disagree


def test_the_early_exit_vit_of_the_zoo(tmp_path):
    """create_model("vit"): the documented sizes (docs/method.md §2.5), an exit after every block, strict
    loading, and its joint recipe."""
    from deepsloth.errors import DeepslothError
    from deepsloth.models import count_parameters, create_model, save_model_dir
    from deepsloth.train.recipes import default_recipe
    model = create_model("vit", "cifar10", seed=0)
    assert isinstance(model, AttachedExits) and model.num_exits == 6 and count_parameters(model) == 818_876
    assert count_parameters(create_model("vit", "tinyimagenet", seed=0)) == 984_368
    assert [len(o) for o in model(torch.rand(2, 3, 32, 32))] == [2] * 6
    save_model_dir(tmp_path / "v", model, model.meta)
    back = create_model(tmp_path / "v")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.eval()(x), back(x)))
    r = default_recipe("vit", "sdn", "fast")
    assert (r.optimizer, r.lr, r.weight_decay, r.label_smoothing, r.exit_weights) == ("adamw", 1e-3, 0.05, 0.1, "equal")
    with pytest.raises(DeepslothError, match="no plain-CNN form"):
        create_model("vit_cnn")
