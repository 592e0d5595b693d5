"""Partial fine-tuning (Yosinski et al. 2014, arXiv:1411.1792): θ ← θ − η·∇L(θ) for θ in the chosen
modules only; every other pretrained tensor keeps its value bit for bit.

The registration (options, estimate, config check, traits) needs no torch; `model.py` is the torch
half. A linear probe (`head_only`) changes no pretrained weight and has no layers to unfreeze.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuning.errors import SpecError
from tuning.methods.base_model import ModelConfig, ModelShapes
from tuning.methods.partial.options import PartialMethod
from tuning.methods.registry import PaperRate, register_method

if TYPE_CHECKING:
    from tuning.methods.apply import MethodModel

__all__ = ["METHOD", "PartialMethod"]


def estimate(options: PartialMethod, shapes: ModelShapes) -> int:
    """The chosen modules' tensors; for the last N layers, their share of the stack and what follows it."""
    if options.head_only:
        return 0
    if options.last_n_layers is not None:
        return shapes.last_layers(first=shapes.layers - options.last_n_layers)
    return shapes.matching(options.modules or [])


def lowest_layer(options: PartialMethod, shapes: ModelShapes) -> int:
    """The stack's top for a linear probe, the first of the last N layers, else the lowest matching."""
    if options.head_only:
        return shapes.layers
    if options.last_n_layers is not None:
        return max(shapes.layers - options.last_n_layers, 0)
    return shapes.lowest_matching(options.modules or [])


def last_layers_exist(options: PartialMethod, config: ModelConfig) -> None:
    count = config.layers
    if count is None or options.last_n_layers is None:
        return
    if options.last_n_layers > count:
        raise SpecError(
            f"last_n_layers is {options.last_n_layers}, but {config.describe()} has "
            f"{count} transformer layers",
            param="method.last_n_layers",
        )


def unfreeze_refusal(options: PartialMethod) -> str | None:
    if options.head_only:
        return "gradual_unfreeze needs layers to unfreeze; partial with head_only trains none"
    return None


def torch_half() -> MethodModel:
    from tuning.methods.partial import model  # torch: imported when a model is built, not by the API

    return model


def learning_rate(options: PartialMethod) -> PaperRate:
    # A linear probe trains a fresh head alone: Adam's default rate (Kingma & Ba 2014). The last N
    # layers are fine-tuned as BERT fine-tunes them all (Devlin et al. 2018, A.3: 2e-5..5e-5); with
    # the layers below frozen, the top of that grid.
    if options.head_only:
        return PaperRate(1e-3, "a linear probe: Adam's default, Kingma & Ba 2014")
    return PaperRate(5e-5, "Devlin et al. 2018, BERT, A.3: 2e-5..5e-5")


METHOD = register_method(
    name="partial",
    options=PartialMethod,
    estimate=estimate,
    learning_rate=learning_rate,
    torch_half=torch_half,
    additive=False,
    mergeable=True,
    compat=[last_layers_exist],
    example={"last_n_layers": 2},
    changes_pretrained=lambda options: not options.head_only,
    unfreeze_refusal=unfreeze_refusal,
    lowest_layer=lowest_layer,
    frozen_base=lambda options: options.head_only,
)
