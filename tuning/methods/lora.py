"""LoRA (Hu et al., 2021, arXiv:2106.09685): h = W·x + (alpha/r)·B·A·dropout(x), W frozen, A and B trained.

`lora_A` and `lora_B` are bias-free `nn.Linear` modules so that a wrapped layer's parameter names
(`<path>.lora_A.weight`) are exactly PEFT's on-disk names once PEFT's `base_model.model.` prefix is
added: export and reload need no renaming table.
"""

import math
from collections.abc import Collection

import torch
from torch import nn

from tuning.errors import SpecError
from tuning.methods import Applied, MethodContext
from tuning.spec import LoraMethod


class LoraLinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update that starts at zero."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        *,
        base: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        self.base_layer = base if base is not None else nn.Linear(in_features, out_features)
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Linear(in_features, r, bias=False)
        self.lora_B = nn.Linear(r, out_features, bias=False)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = alpha / r
        self.merged = False
        # The paper's reference code: A Kaiming-uniform, B zero, so B·A = 0 and the wrapped layer
        # computes exactly what the base did until the first update.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @classmethod
    def wrap(cls, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> "LoraLinear":
        """Wrap an existing layer, keeping its weights (and their device and dtype) as the frozen base."""
        layer = cls(base.in_features, base.out_features, r, alpha, dropout, base=base)
        return layer.to(device=base.weight.device, dtype=base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged:
            return out
        return out + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The dense update this layer adds to W: (alpha/r)·B·A."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold B·A into W so inference costs no more than the base layer."""
        if not self.merged:
            self.base_layer.weight += self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take B·A back out of W (exact up to float rounding)."""
        if self.merged:
            self.base_layer.weight -= self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = False


def apply(model: nn.Module, options: LoraMethod, context: MethodContext) -> Applied:
    adapted = apply_lora(model, options, exclude=context.head_modules)
    return Applied(f"LoRA on {len(adapted)} layers", {"lora_layers": adapted})


def apply_lora(model: nn.Module, method: LoraMethod, *, exclude: Collection[str] = ()) -> list[str]:
    """Wrap every `nn.Linear` named by `method.target_modules`; return the wrapped names.

    A target matches a module whose qualified name equals it or ends with "." + target (PEFT's
    rule). Modules under `exclude` (the trained-in-full head) are left alone. Raises SpecError
    naming the available Linear suffixes when nothing matches.
    """
    linears = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not _is_under(name, exclude)
    }
    chosen = [name for name in linears if any(matches_target(name, t) for t in method.target_modules)]
    if not chosen:
        raise SpecError(
            f"target_modules {method.target_modules} match no nn.Linear layer of this model; "
            f"its Linear layers end in: {', '.join(linear_suffixes(linears))}",
            param="method.target_modules",
        )
    # Collected first and replaced after, so the new lora_A/lora_B Linears are never revisited.
    for name in chosen:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped = LoraLinear.wrap(linears[name], method.r, method.alpha, method.dropout)
        setattr(parent, child_name, wrapped)
    return chosen


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLinear)}


def merge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.unmerge()


def matches_target(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def linear_suffixes(linears: Collection[str]) -> list[str]:
    """The distinct last components of Linear names ("query", "dense", ...), what users target."""
    return sorted({name.rpartition(".")[2] for name in linears})


def _is_under(name: str, prefixes: Collection[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
