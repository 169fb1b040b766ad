"""`deepsloth describe ARCH --dataset D` or `deepsloth describe MODEL`: parameters, exits and measured
per-exit cost of an architecture, or of a trained model (a zoo name or model directory)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .common import add_json, nonempty, print_json

CONVENTIONS = ("paper", "exact")


def describe(arch: str, dataset: Optional[str] = None, convention: str = "paper") -> dict:
    """`arch`: an architecture name (built untrained for `dataset`, default cifar10) or a trained model's
    zoo name or directory (its own dataset; a different `dataset` is an error)."""
    from ..errors import DeepslothError
    from ..exits.cost import measure_exit_costs
    from ..models.registry import MULTI_EXIT, count_parameters, create_model, dataset_shape, parse_name
    from ..models.zoo import find_model_dir

    found = find_model_dir(arch) if arch else None
    if found is not None:
        model = create_model(found)
        meta = model.meta
        if dataset is not None and dataset != meta["dataset"]:
            raise DeepslothError(f"{arch} is a {meta['dataset']} model, not {dataset}")
        base, dataset = meta["arch"], meta["dataset"]
        size = int(meta.get("input_size") or dataset_shape(dataset)[1])
        kind = ("cnn" if meta.get("mode") == "cnn" else "multi-exit" if base in MULTI_EXIT or
                not hasattr(model, "backbone") else "sdn")
        name = str(arch)
    else:
        try:
            base, sdn = parse_name(arch)
        except DeepslothError as e:
            if Path(arch).is_dir():   # a folder, but not a model directory
                raise DeepslothError(f"{arch} is not a model directory (no model.json) nor an architecture")
            raise DeepslothError(f"{e} (or a zoo name, or a model directory)") from None
        sdn = True if sdn is None else sdn
        dataset = dataset or "cifar10"
        model = create_model(base, dataset, sdn=sdn, seed=0)
        _, size = dataset_shape(dataset)
        kind = "multi-exit" if base in MULTI_EXIT else "sdn" if sdn else "cnn"
        name = base
    cost = measure_exit_costs(model, (3, size, size), convention=convention)
    cnn_params = count_parameters(model.backbone()) if kind == "sdn" else count_parameters(model)
    return {"name": name, "arch": base, "dataset": dataset, "kind": kind,
            "params": count_parameters(model), "cnn_params": cnn_params, "exits": len(cost.ops),
            "ops": cost.total_ops, "macs": cost.macs[-1], "cost_convention": convention,
            "cumulative_ops": cost.ops, "cumulative_macs": cost.macs,
            "cumulative_cost": [round(c, 6) for c in cost.normalised]}


def run(args) -> int:
    info = describe(args.arch, args.dataset, args.cost_convention)
    if args.json:
        print_json(info)
        return 0
    name = f"{info['name']}: " if info["name"] != info["arch"] else ""
    print(f"{name}{info['arch']} ({info['kind'].upper()}) on {info['dataset']}")
    backbone = f" (backbone CNN {info['cnn_params'] / 1e6:.3f} M)" if info["kind"] == "sdn" else ""
    print(f"  parameters      {info['params'] / 1e6:.3f} M{backbone}")
    print(f"  exits           {info['exits']}")
    print("  ops per exit    " + " ".join(f"{o / 1e6:.1f}" for o in info["cumulative_ops"]) + " M (cumulative)")
    print(f"  ops             {info['ops'] / 1e9:.4f} G ({info['cost_convention']} convention)")
    print(f"  MACs            {info['macs'] / 1e9:.4f} G")
    print("  cumulative cost " + " ".join(f"{c:.3f}" for c in info["cumulative_cost"]))
    return 0


def register(sub) -> None:
    p = sub.add_parser("describe", help="parameters, exits and per-exit cost of an architecture or a model",
                       description="Build ARCH (an SDN unless the name ends in _cnn), or load a trained model "
                                   "(a zoo name or model directory), and measure its parameters, exit count, "
                                   "ops, MACs and normalised cumulative cost per exit.")
    p.add_argument("arch", type=nonempty, metavar="ARCH|MODEL",
                   help="vgg16bn, resnet56, mobilenet (suffix _cnn for the plain CNN), msdnet or vit; or a zoo "
                        "name (resnet56_sdn_cifar10) or model directory")
    p.add_argument("--dataset", default=None, choices=["cifar10", "tinyimagenet"],
                   help="the architecture's dataset (default cifar10); a model has its own")
    p.add_argument("--cost-convention", default="paper", choices=CONVENTIONS,
                   help="paper: close to the reference profiler's count (grouped convs charged x groups; "
                        "docs/method.md §7.5); exact: real multiplies and adds (default: paper)")
    add_json(p)
    p.set_defaults(func=run)
