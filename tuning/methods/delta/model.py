"""Delta tuning (Ding et al. 2022, arXiv:2203.06904): h = (W + Δw)·x + b, W frozen, Δw (zero at init) trained.

∂L/∂Δw = ∂L/∂W at W + Δw, so with plain SGD the trajectory of W + Δw is full fine-tuning's; what
changes is that Δw is a tensor of its own: it can be saved alone, regularised, or compressed to
LoRA by truncated SVD (tuning/artifacts/compress.py).
"""

import copy
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from tuning.errors import SpecError
from tuning.methods.apply import Applied, MethodContext
from tuning.methods.delta.options import DeltaMethod
from tuning.methods.projections import (
    Projection,
    linear_suffixes,
    matches_target,
    projection_features,
    projections,
    replace_module,
)


class DeltaLinear(nn.Module):
    """A frozen `nn.Linear` (or `Conv1D`) plus a dense trainable Δw of W's shape, zero at init."""

    def __init__(self, in_features: int, out_features: int, *, base: Projection | None = None) -> None:
        super().__init__()
        self.base_layer: Projection = base if base is not None else nn.Linear(in_features, out_features)
        self.base_layer.requires_grad_(False)
        self.delta = nn.Parameter(torch.zeros_like(self.base_layer.weight))

    @classmethod
    def wrap(cls, base: Projection) -> "DeltaLinear":
        """Wrap an existing layer, keeping its weights as the frozen base (Δw on their device and dtype)."""
        in_features, out_features = projection_features(base)
        return cls(in_features, out_features, base=base)

    @property
    def fan_in_fan_out(self) -> bool:
        """Whether W (and so Δw) is stored (in, out), GPT-2's Conv1D."""
        return isinstance(self.base_layer, Conv1D)

    def delta_weight(self) -> torch.Tensor:
        """Δw, in W's own layout (the same call as LoRA's s·B·A, for merging and compressing)."""
        return self.delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.base_layer.weight + self.delta
        bias = self.base_layer.bias
        if isinstance(self.base_layer, Conv1D):
            # Conv1D's own arithmetic (addmm over (in, out)), so Δw = 0 gives bit-identical outputs.
            return torch.addmm(bias, x.reshape(-1, x.size(-1)), weight).view(*x.shape[:-1], weight.size(1))
        return F.linear(x, weight, bias)

    @torch.no_grad()
    def merged_layer(self) -> Projection:
        """A plain layer of the base's type computing with W + Δw: what a merged export saves."""
        layer = copy.deepcopy(self.base_layer)
        layer.weight += self.delta.to(layer.weight.dtype)
        return layer


def apply(model: nn.Module, options: DeltaMethod, context: MethodContext) -> Applied:
    wrapped = apply_delta(model, options.target_modules, exclude=context.head_modules)
    trained = sum(layer.delta.numel() for layer in wrapped.values())
    return Applied(
        f"delta tuning: a dense Δw beside {len(wrapped)} frozen weights",
        {"delta_layers": list(wrapped), "delta_parameters": trained},
        deviations=lambda: ((f"{name}.weight", layer.delta) for name, layer in wrapped.items()),
    )


def apply_delta(
    model: nn.Module, targets: list[str] | None, *, exclude: Collection[str] = ()
) -> dict[str, DeltaLinear]:
    """Give every targeted `nn.Linear`/`Conv1D` outside `exclude` a Δw (each of them if `targets` is None)."""
    candidates = projections(model, exclude)
    chosen = [name for name in candidates if targets is None or any(matches_target(name, t) for t in targets)]
    if not chosen:
        raise SpecError(
            f"target_modules {targets} match no nn.Linear or Conv1D layer of this model; "
            f"its Linear and Conv1D layers end in: {', '.join(linear_suffixes(candidates))}",
            param="method.target_modules",
        )
    wrapped = {name: DeltaLinear.wrap(candidates[name]) for name in chosen}
    for name, layer in wrapped.items():
        replace_module(model, name, layer)
    return wrapped


def delta_layers(model: nn.Module) -> dict[str, DeltaLinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, DeltaLinear)}
