"""Bottleneck adapters (Houlsby et al., 2019, arXiv:1902.00751; Pfeiffer et al., 2020, arXiv:2005.00247):
h ← h + up(act(down(h))) on a sublayer's output projection, every pretrained weight frozen.

Houlsby places an adapter after the attention block's output projection and after the feed-forward
block's; Pfeiffer only after the feed-forward one. Both sit before the residual add and LayerNorm,
which is where wrapping the output projection puts them. The projections are found by their path
inside each layer of the stack `context.layers` found, one row per architecture family.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tuning.errors import SpecError
from tuning.methods.adapter.options import AdapterMethod
from tuning.methods.apply import Applied, MethodContext
from tuning.methods.bottleneck import Bottleneck, bottleneck_width
from tuning.spec_base import Activation


@dataclass(frozen=True)
class Projections:
    """Where a family's sublayer output projections sit, relative to one transformer layer."""

    family: str
    attention: str
    feed_forward: str


# The first row whose two paths both exist in the model's first layer wins. Paths are exact, not
# suffixes: BERT's feed-forward `output.dense` must not also pick up `attention.output.dense`.
PROJECTIONS: tuple[Projections, ...] = (
    Projections("bert (roberta, electra, deberta-v2, ...)", "attention.output.dense", "output.dense"),
    Projections("gpt2", "attn.c_proj", "mlp.c_proj"),
    Projections("llama (mistral, qwen2, gemma, ...)", "self_attn.o_proj", "mlp.down_proj"),
    Projections("distilbert", "attention.out_lin", "ffn.lin2"),
    Projections("opt", "self_attn.out_proj", "fc2"),
    Projections("gpt-neox", "attention.dense", "mlp.dense_4h_to_h"),
    Projections("gpt-j", "attn.out_proj", "mlp.fc_out"),
)


class AdaptedProjection(nn.Module):
    """A frozen output projection followed by a trainable bottleneck adapter."""

    def __init__(self, base: nn.Module, dim: int, bottleneck: int, activation: Activation) -> None:
        super().__init__()
        self.base_layer = base.requires_grad_(False)
        self.adapter = Bottleneck(dim, bottleneck, activation)

    @classmethod
    def wrap(cls, base: nn.Module, bottleneck: int, activation: Activation) -> "AdaptedProjection":
        """Wrap `base`, the adapter on its weights' device and dtype."""
        weight = next(base.parameters())
        wrapped = cls(base, output_width(base), bottleneck, activation)
        wrapped.adapter.to(device=weight.device, dtype=weight.dtype)
        return wrapped

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.base_layer(*args, **kwargs)
        return self.adapter(output)


def apply(model: nn.Module, options: AdapterMethod, context: MethodContext) -> Applied:
    stack = model.get_submodule(context.layers.stack)
    assert isinstance(stack, nn.ModuleList)  # find_layers only maps ModuleLists
    projections = find_projections(stack[0], _architecture(model))
    paths = [projections.feed_forward]
    if options.placement == "houlsby":
        paths.insert(0, projections.attention)
    wrapped = add_adapters(stack, paths, options)
    widths = sorted({layer.adapter.down.out_features for layer in wrapped.values()})
    placement = "after attention and feed-forward" if options.placement == "houlsby" else "after feed-forward"
    summary = (
        f"{options.placement.capitalize()} adapters {placement} in {len(stack)} layers: "
        f"{len(wrapped)} adapters, bottleneck {'/'.join(map(str, widths))}"
    )
    details = {
        "placement": options.placement,
        "adapters": len(wrapped),
        "bottleneck_size": widths[0] if len(widths) == 1 else widths,
        "non_linearity": options.non_linearity,
        "architecture": projections.family,
        "adapted_modules": [f"{context.layers.stack}.{name}" for name in wrapped],
    }
    return Applied(summary, details)


def find_projections(layer: nn.Module, architecture: str) -> Projections:
    """The first table row whose paths both exist in `layer`; SpecError naming the model otherwise."""
    for row in PROJECTIONS:
        if _has(layer, row.attention) and _has(layer, row.feed_forward):
            return row
    known = "; ".join(f"{row.family}: {row.attention}, {row.feed_forward}" for row in PROJECTIONS)
    raise SpecError(
        f"adapter does not know where the attention and feed-forward output projections of "
        f"{architecture} layers are; it knows {known}",
        param="method.type",
    )


def add_adapters(
    stack: nn.ModuleList, paths: Sequence[str], options: AdapterMethod
) -> dict[str, AdaptedProjection]:
    """Wrap `paths` in every layer of `stack`; return the wrappers by their name under the stack."""
    wrapped: dict[str, AdaptedProjection] = {}
    for index, layer in enumerate(stack):
        for path in paths:
            base = layer.get_submodule(path)
            width = bottleneck_width(output_width(base), options.reduction_factor, options.bottleneck_size)
            adapted = AdaptedProjection.wrap(base, width, options.non_linearity)
            parent_name, _, child_name = path.rpartition(".")
            setattr(layer.get_submodule(parent_name) if parent_name else layer, child_name, adapted)
            wrapped[f"{index}.{path}"] = adapted
    return wrapped


def output_width(module: nn.Module) -> int:
    """Output features of a projection: nn.Linear's out_features, or GPT-2's Conv1D nf."""
    for attribute in ("out_features", "nf"):
        width = getattr(module, attribute, None)
        if isinstance(width, int):
            return width
    raise SpecError(
        f"cannot tell the output width of a {type(module).__name__} projection", param="method.type"
    )


def _architecture(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    return f"{type(model).__name__} ({model_type})" if model_type else type(model).__name__


def _has(layer: nn.Module, path: str) -> bool:
    try:
        layer.get_submodule(path)
    except AttributeError:
        return False
    return True
