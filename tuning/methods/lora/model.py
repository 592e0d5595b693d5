"""LoRA (Hu et al., 2021, arXiv:2106.09685): h = W·x + s·B·A·dropout(x), W frozen, A and B trained,
s = alpha/r (alpha/√r with rsLoRA, arXiv:2312.03732); LoRA+ (arXiv:2402.12354) trains B faster.

`lora_A` and `lora_B` are bias-free `nn.Linear` modules so that a wrapped layer's parameter names
(`<path>.lora_A.weight`) are exactly PEFT's on-disk names once PEFT's `base_model.model.` prefix is
added: export and reload need no renaming table. GPT-2's `Conv1D` (weight stored (in, out), PEFT's
`fan_in_fan_out`) is wrapped the same way; only the dense update is transposed for it.
"""

import copy
import math
from collections.abc import Collection, Iterator

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from tuning.errors import SpecError
from tuning.layers import LayerMap, find_layers
from tuning.methods.apply import Applied, MethodContext
from tuning.methods.lora.dropped_down import dropped_down, uses_dropped_down
from tuning.methods.lora.options import LoraMethod
from tuning.methods.projections import (
    Projection,
    linear_suffixes,
    matches_target,
    pattern_value,
    projection_features,
    projections,
    replace_module,
)


class LoraLinear(nn.Module):
    """A frozen `nn.Linear` (or `Conv1D`) plus a trainable low-rank update that starts at zero."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        *,
        use_rslora: bool = False,
        base: Projection | None = None,
    ) -> None:
        super().__init__()
        self.base_layer: Projection = base if base is not None else nn.Linear(in_features, out_features)
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Linear(in_features, r, bias=False)
        self.lora_B = nn.Linear(r, out_features, bias=False)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # rsLoRA: alpha/√r keeps the update's scale stable as r grows, where alpha/r shrinks it.
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.merged = False
        # W + s·B·A while an evaluation runs folded (tuning.folded_evaluation); W itself is not written.
        self.folded: torch.Tensor | None = None
        # The paper's reference code: A Kaiming-uniform, B zero, so B·A = 0 and the wrapped layer
        # computes exactly what the base did until the first update.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @classmethod
    def wrap(
        cls, base: Projection, r: int, alpha: float, dropout: float = 0.0, *, use_rslora: bool = False
    ) -> "LoraLinear":
        """Wrap an existing layer, keeping its weights (and their device and dtype) as the frozen base."""
        in_features, out_features = projection_features(base)
        layer = cls(in_features, out_features, r, alpha, dropout, use_rslora=use_rslora, base=base)
        return layer.to(device=base.weight.device, dtype=base.weight.dtype)

    @property
    def fan_in_fan_out(self) -> bool:
        """Whether the base stores W as (in, out), GPT-2's Conv1D: PEFT's name for it."""
        return isinstance(self.base_layer, Conv1D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded is not None and not self.training:
            return nn.functional.linear(x, self.folded, self.base_layer.bias)
        out: torch.Tensor = self.base_layer(x)
        if self.merged:
            return out
        return out + self.lora_B(self._down(x)) * self.scaling

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        """A·dropout(x); training on a CPU draws only the dropped positions (lora.dropped_down)."""
        dropout = self.lora_dropout
        if self.training and isinstance(dropout, nn.Dropout) and uses_dropped_down(dropout.p, x):
            return dropped_down(x, self.lora_A.weight, dropout.p)
        down: torch.Tensor = self.lora_A(dropout(x))
        return down

    def delta_weight(self) -> torch.Tensor:
        """The dense update this layer adds to W, s·B·A, in W's own layout (transposed for Conv1D)."""
        delta = (self.lora_B.weight @ self.lora_A.weight) * self.scaling
        return delta.T if self.fan_in_fan_out else delta

    @torch.no_grad()
    def fold_for_evaluation(self) -> None:
        """Keep W + s·B·A beside W, in `nn.Linear`'s (out, in) layout, for eval-mode forwards until
        `unfold_after_evaluation`: one matmul per call instead of the base's plus the branch's."""
        if not self.merged:
            weight = self.base_layer.weight + self.delta_weight().to(self.base_layer.weight.dtype)
            self.folded = (weight.T if self.fan_in_fan_out else weight).contiguous()

    def unfold_after_evaluation(self) -> None:
        self.folded = None

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

    @torch.no_grad()
    def merged_layer(self) -> Projection:
        """A plain layer of the base's type computing W + s·B·A: what a merged export saves."""
        layer = copy.deepcopy(self.base_layer)
        if not self.merged:
            layer.weight += self.delta_weight().to(layer.weight.dtype)
        return layer


def apply(model: nn.Module, options: LoraMethod, context: MethodContext) -> Applied:
    adapted = apply_lora(model, options, exclude=context.head_modules, layers=context.layers)
    layers = lora_layers(model)
    ranks = {name: layers[name].lora_A.out_features for name in adapted}
    details: dict[str, object] = {"lora_layers": adapted}
    if options.rank_pattern:
        details["ranks"] = ranks
    return Applied(
        f"LoRA on {len(adapted)} layers",
        details,
        lr_scales=loraplus_lr_scales(model, options.loraplus_lr_ratio),
        deviations=lambda: lora_deviations(model),
    )


def apply_lora(
    model: nn.Module,
    method: LoraMethod,
    *,
    exclude: Collection[str] = (),
    layers: LayerMap | None = None,
) -> list[str]:
    """Wrap every `nn.Linear` or `Conv1D` named by `method.target_modules`; return the wrapped names.

    A target matches a module whose qualified name equals it or ends with "." + target (PEFT's
    rule); `layers_to_transform` keeps only those inside the listed transformer layers (`layers`
    is the model's layer map, found here when not given). Modules under `exclude` (the
    trained-in-full head) are left alone. Raises SpecError naming the available suffixes when
    nothing matches.
    """
    candidates = projections(model, exclude)
    chosen = [name for name in candidates if any(matches_target(name, t) for t in method.target_modules)]
    if method.layers_to_transform is not None:
        layer_map = layers if layers is not None else find_layers(model, list(exclude))
        wanted = set(method.layers_to_transform)
        chosen = [name for name in chosen if layer_map.layer_of(name) in wanted]
    if not chosen:
        where = f" in layers {method.layers_to_transform}" if method.layers_to_transform is not None else ""
        raise SpecError(
            f"target_modules {method.target_modules} match no nn.Linear or Conv1D layer of this model"
            f"{where}; "
            f"its Linear and Conv1D layers end in: {', '.join(linear_suffixes(candidates))}",
            param="method.target_modules",
        )
    # Collected first and replaced after, so the new lora_A/lora_B Linears are never revisited.
    for name in chosen:
        r = pattern_value(method.rank_pattern, name, method.r)
        wrapped = LoraLinear.wrap(
            candidates[name], r, method.alpha, method.dropout, use_rslora=method.use_rslora
        )
        replace_module(model, name, wrapped)
    return chosen


def loraplus_lr_scales(model: nn.Module, ratio: float | None) -> dict[str, float]:
    """LoRA+: every B matrix learns `ratio` times faster than A (B starts at zero, A does not)."""
    if ratio is None:
        return {}
    return {f"{name}.lora_B.weight": ratio for name in lora_layers(model)}


def lora_deviations(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(pretrained weight name, s·B·A) per wrapped layer, with grad: what L2-SP and EWC penalise."""
    for name, layer in lora_layers(model).items():
        yield f"{name}.weight", layer.delta_weight()


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLinear)}


def merge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.unmerge()
