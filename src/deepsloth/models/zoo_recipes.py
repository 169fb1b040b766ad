"""How every zoo model is (re)made: CNN training, then IC-only training on top (docs/method.md §3);
for an architecture built with its exits (MSDNet), joint training of all exits (`"joint"` stages).

`deepsloth zoo train NAME` runs these steps with `deepsloth train`'s loop: the CNN stages in
order (each later stage continues the previous one under a fresh one-cycle schedule), then,
where a recipe says `average`, the mean of the last stages' weights with BatchNorm statistics
re-estimated on training images (`deepsloth.train.average`), then the IC-only SDN. Every
directory records its recipe, seed, data source and lineage in its `model.json`.
"""
from __future__ import annotations

from typing import Dict

ZOO_RECIPES: Dict[str, Dict] = {
    "resnet56_sdn_cifar10": {
        "arch": "resnet56", "dataset": "cifar10", "seed": 0,
        "cnn": [{"recipe": "fast", "epochs": 9}, {"recipe": "fast", "epochs": 20, "lr": 0.1},
                {"recipe": "fast", "epochs": 12, "lr": 0.05}],
        "average": {"last": 2, "bn_images": 10000},   # mean of the last two CNN stages' weights
        "ic-only": {"recipe": "fast", "epochs": 3},
        "store_dtype": "float32",
    },
    "mobilenet_sdn_cifar10": {
        "arch": "mobilenet", "dataset": "cifar10", "seed": 0,
        "cnn": [{"recipe": "fast", "epochs": 20}, {"recipe": "fast", "epochs": 10, "lr": 0.05},
                {"recipe": "fast", "epochs": 20, "lr": 0.1}, {"recipe": "fast", "epochs": 12, "lr": 0.05}],
        "average": {"last": 2, "bn_images": 10000},
        "ic-only": {"recipe": "fast", "epochs": 4},
        "store_dtype": "float16",
    },
    "vgg16bn_sdn_cifar10": {
        "arch": "vgg16bn", "dataset": "cifar10", "seed": 0,
        # stages of a few CPU hours each (about 11 min per fp32 CNN epoch on 2 cores, 5 min under bf16
        # autocast); the shipped model's second stage continued its first stage's fp16-stored backbone
        "cnn": [{"recipe": "fast", "epochs": 12, "lr": 0.1},
                {"recipe": "fast", "epochs": 10, "lr": 0.05, "amp": "bf16"},
                {"recipe": "fast", "epochs": 10, "lr": 0.02, "amp": "bf16"},
                # 96.8% training accuracy at 88.4% test: more epochs, with cutout against the overfitting
                {"recipe": "fast", "epochs": 20, "lr": 0.05, "cutout": 16, "amp": "bf16"},   # 89.8%
                {"recipe": "fast", "epochs": 4, "lr": 0.01, "cutout": 16, "amp": "bf16"}],   # 90.2%
        "ic-only": {"recipe": "fast", "epochs": 2, "amp": "bf16"},
        "store_dtype": "float16",
    },
    "msdnet_cifar10": {
        "arch": "msdnet", "dataset": "cifar10", "seed": 0,
        # joint training, every exit's loss weighted 1; about 8 min per epoch on 2 CPU cores (bf16 gains
        # nothing on this network of small convolutions)
        "joint": [{"recipe": "fast", "epochs": 8}],
        "store_dtype": "float16",
    },
    "vit_cifar10": {
        "arch": "vit", "dataset": "cifar10", "seed": 0,
        # the early-exit ViT (docs/method.md §2.5), all 6 exits trained jointly, every exit's loss weighted 1;
        # 4.5-5 min per epoch on one busy CPU core (bf16 gains nothing at this width). The first stage ended
        # at 66.7% (per exit 51.3 / 60.4 / 64.0 / 65.9 / 66.4 / 66.7%) with training accuracy 67.8%:
        # under-fitted, so a second one-cycle stage continues it (75.33% final, docs/zoo.md)
        "joint": [{"recipe": "fast", "epochs": 12}, {"recipe": "fast", "epochs": 20}],
        "store_dtype": "float16",
    },
}
