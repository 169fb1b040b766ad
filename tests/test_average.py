"""Weight averaging and BatchNorm re-estimation (train/average.py), checked against hand computations."""
import pytest
import torch
from torch import nn

from deepsloth.data.augment import augment_batch
from deepsloth.data.cache import Dataset
from deepsloth.errors import DeepslothError
from deepsloth.models import create_model, save_model_dir
from deepsloth.train.average import average_model_dirs, average_weights, recompute_batchnorm


def _tiny(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


def _data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Dataset("cifar10", "train", torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.arange(n) % 10, [str(i) for i in range(10)], source="synthetic")


def test_average_is_the_elementwise_mean_and_keeps_integer_buffers_of_the_last():
    a, b, c = _tiny(0), _tiny(1), _tiny(2)
    c[1].num_batches_tracked.fill_(7)
    avg = average_weights([a, b, c])
    for k, v in avg.state_dict().items():
        if v.is_floating_point():
            want = (a.state_dict()[k] + b.state_dict()[k] + c.state_dict()[k]) / 3
            assert torch.allclose(v, want, atol=1e-7), k
    assert avg[1].num_batches_tracked.item() == 7
    assert avg is not a and torch.equal(a[0].weight, _tiny(0)[0].weight)   # sources untouched


def test_average_rejects_mismatched_architectures():
    other = nn.Sequential(nn.Conv2d(3, 5, 3))
    with pytest.raises(DeepslothError, match="differ in architecture"):
        average_weights([_tiny(0), other])
    with pytest.raises(DeepslothError, match="at least two"):
        average_weights([_tiny(0)])


def test_batchnorm_statistics_are_those_of_the_augmented_training_images():
    model, data = _tiny(0), _data(24)
    model[1].momentum = 0.3
    recompute_batchnorm(model, data, n_images=24, batch_size=24, seed=5)
    x = augment_batch(data.images, "cifar10", torch.Generator().manual_seed(5))
    with torch.no_grad():
        feats = model[0](x)
    assert torch.allclose(model[1].running_mean, feats.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(model[1].running_var, feats.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert model[1].momentum == 0.3 and not model.training


def test_average_model_dirs_saves_a_loadable_model_with_its_lineage(tmp_path):
    dirs = []
    for s in (0, 1):
        m = create_model("resnet56_cnn", dataset="cifar10", seed=s)
        d = tmp_path / f"m{s}"
        save_model_dir(d, m, {"arch": "resnet56", "dataset": "cifar10", "num_classes": 10, "input_size": 32,
                              "mode": "cnn", "recipe": {"name": f"r{s}"}})
        dirs.append(d)
    data = _data(16)
    meta = average_model_dirs(dirs, tmp_path / "avg", data, data, n_images=16, log=lambda s: None)
    model = create_model(tmp_path / "avg")
    saved = model.meta
    assert saved["recipe"]["name"] == "weight-average" and saved["recipe"]["bn_images"] == 16
    assert [r["recipe"]["name"] for r in saved["averaged_from"]] == ["r0", "r1"]
    assert meta["accuracy"]["n"] == 16 and 0.0 <= meta["accuracy"]["final"] <= 1.0
    w0 = create_model(dirs[0]).state_dict()
    w1 = create_model(dirs[1]).state_dict()
    learned = [k for k in w0 if "running" not in k and "num_batches" not in k]
    assert len(learned) > 100
    for k in learned:
        assert torch.allclose(model.state_dict()[k], (w0[k] + w1[k]) / 2, atol=1e-6), k
