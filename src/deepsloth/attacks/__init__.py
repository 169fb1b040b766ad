"""Attacks on multi-exit networks: the PGD family, UAP and DeepSloth (docs/method.md §5).

    from deepsloth.attacks import PGD, UAP, DeepSloth, apply_universal
    x_adv = PGD(model, objective="avg", eps=8/255, steps=20, step_size=0.001, seed=0)(x, y)
    x_slow = DeepSloth(model, norm="linf")(x)
    delta = DeepSloth(model, scope="universal")(x_train)      # [3,H,W]
    x_uni = apply_universal(x_test, delta)
    x_ada = AdaptiveDeepSloth(model, defence="jpeg:quality=75")(x)   # knows the defence (docs/defences.md)

A model is any `nn.Module` whose forward returns the list of exit logits (final last).
Objectives (`objectives`) are pluggable functions of those logits; every norm-specific
operation lives in `norms`. Every attack is seeded and deterministic for a seed and device.
"""
from .adaptive import AdaptiveDeepSloth
from .base import Attack, apply_universal, derive_seed, frozen
from .deepsloth import DeepSloth, deepsloth_defaults
from .norms import (NORMS, check_norm, clip_to_ball, lp_norm, norm_report, project, project_l1,
                    project_l2, project_linf, random_in_ball, sparse_sign, steepest_direction)
from .objectives import (OBJECTIVES, exit_ce, final_ce, get_objective, mean_ce, sum_ce,
                         uniform_ic_loss)
from .pgd import PGD, PGD_DEFAULTS
from .uap import UAP

__all__ = [
    "Attack", "PGD", "UAP", "DeepSloth", "AdaptiveDeepSloth", "apply_universal", "frozen", "derive_seed",
    "PGD_DEFAULTS", "deepsloth_defaults",
    "NORMS", "check_norm", "lp_norm", "norm_report", "project", "project_linf", "project_l2",
    "project_l1", "clip_to_ball", "random_in_ball", "sparse_sign", "steepest_direction",
    "OBJECTIVES", "get_objective", "final_ce", "mean_ce", "sum_ce", "exit_ce", "uniform_ic_loss",
]
