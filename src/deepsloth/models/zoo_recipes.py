"""How every zoo model is (re)made: CNN training, then IC-only training on top (SPEC 3).

`deepsloth zoo train NAME` runs exactly these two steps with `deepsloth train`'s loop; the
resulting directories record the recipe, seed and data source in their `model.json`.
"""
from __future__ import annotations

from typing import Dict

ZOO_RECIPES: Dict[str, Dict] = {
    "resnet56_sdn_cifar10": {
        "arch": "resnet56", "dataset": "cifar10", "seed": 0,
        "cnn": {"recipe": "fast", "epochs": 9}, "ic-only": {"recipe": "fast", "epochs": 3},
        "store_dtype": "float32",
    },
    "mobilenet_sdn_cifar10": {
        "arch": "mobilenet", "dataset": "cifar10", "seed": 0,
        "cnn": {"recipe": "fast", "epochs": 20}, "ic-only": {"recipe": "fast", "epochs": 4},
        "store_dtype": "float16",
    },
    "vgg16bn_sdn_cifar10": {
        "arch": "vgg16bn", "dataset": "cifar10", "seed": 0,
        "cnn": {"recipe": "fast", "epochs": 20}, "ic-only": {"recipe": "fast", "epochs": 4},
        "store_dtype": "float16",
    },
}
