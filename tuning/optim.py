"""The optimizer and its learning-rate schedule: parameter groups, warmup then linear decay.

Each parameter group carries an `lr_scale`: the training loop sets every group's rate to the
schedule's rate times that scale, which is how layer-wise learning rates and LoRA+'s faster B
matrices reach the optimizer.
"""

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from tuning.spec import ResolvedHyperparameters


def parameter_groups(
    model: nn.Module, weight_decay: float, lr_scales: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """One group per (decayed or not, lr scale) over the parameters that require grad now.

    Decay matrices only: decaying biases and LayerNorm gains pulls them to 0, which is not a prior.
    """
    scales = lr_scales or {}
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decayed = parameter.ndim >= 2
        scale = float(scales.get(name, 1.0))
        group = groups.setdefault(
            (decayed, scale),
            {"params": [], "names": [], "weight_decay": weight_decay if decayed else 0.0, "lr_scale": scale},
        )
        group["params"].append(parameter)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups, key=lambda key: (not key[0], -key[1]))]


def make_optimizer(groups: list[dict[str, Any]], hp: ResolvedHyperparameters) -> torch.optim.Optimizer:
    if hp.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=hp.learning_rate)
    return torch.optim.AdamW(groups, lr=hp.learning_rate)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * warmup_ratio)


def learning_rate_at(step: int, *, peak: float, total_steps: int, warmup: int) -> float:
    """Learning rate of optimizer step `step` (1-based): linear up to `peak`, then linear down.

    Step 1 already gets a non-zero rate and the last step a small positive one, so no step is wasted.
    """
    if step <= warmup:
        return peak * step / warmup
    return peak * (total_steps - step + 1) / (total_steps - warmup)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
