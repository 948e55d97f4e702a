"""Adam with one parameter group per named group, explicit freezing and a sanity check."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from topograph.meso.config import LearningRates


def build_optimizer(
    groups: dict[str, list[nn.Parameter]], trainable: Iterable[str], lr: LearningRates, lr_scale: float = 1.0
) -> torch.optim.Adam | None:
    """Freeze every group not in ``trainable`` and return Adam over the others (None if nothing trains).

    Each trainable group gets its own learning rate ``getattr(lr, name) * lr_scale``. Groups named in
    ``trainable`` that the model does not have (e.g. ``centre`` with no distortion) are skipped.
    """
    wanted = set(trainable)
    param_groups = []
    for name, params in groups.items():
        on = name in wanted
        for p in params:
            p.requires_grad_(on)
        if on:
            param_groups.append({"params": params, "lr": getattr(lr, name) * lr_scale, "name": name})
    if not param_groups:
        return None
    opt = torch.optim.Adam(param_groups)
    check_sanity(opt, groups, wanted)
    return opt


def check_sanity(opt: torch.optim.Optimizer, groups: dict[str, list[nn.Parameter]], trainable: set[str]) -> None:
    """Assert that the optimiser holds exactly the parameters of the trainable groups."""
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    expected = {id(p) for name, ps in groups.items() if name in trainable for p in ps}
    if in_opt != expected:
        raise RuntimeError("optimiser parameters do not match the trainable parameter groups")
    for ps in groups.values():
        for p in ps:
            if (id(p) in in_opt) != p.requires_grad:
                raise RuntimeError("a frozen parameter is in the optimiser or a trainable one is missing")
