"""Prefix tuning (Li & Liang, 2021, arXiv:2101.00190): every layer attends over [P_k; K] and [P_v; V],
the prefixes P trained, the model frozen.

The registration (options, estimate, config check, traits) needs no torch; `model.py` is the torch
half and `artifact.py` writes PEFT's layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuning.errors import SpecError
from tuning.methods.base_model import ModelConfig, ModelShapes
from tuning.methods.prefix_tuning.options import PrefixTuningMethod
from tuning.methods.registry import PaperRate, register_method

if TYPE_CHECKING:
    from tuning.artifacts.job import ArtifactLayout
    from tuning.methods.apply import MethodModel

__all__ = ["METHOD", "PrefixTuningMethod"]


def estimate(options: PrefixTuningMethod, shapes: ModelShapes) -> int:
    """A key and a value prefix per layer; through a projection, a token-wide table and the MLP
    (token → width → every layer's key and value, with biases) that makes the prefixes from it."""
    hidden, layers = shapes.hidden, shapes.layers
    prefixes = 2 * hidden * layers
    if not options.projection:
        return options.num_virtual_tokens * prefixes
    width = options.encoder_hidden_size or hidden
    return options.num_virtual_tokens * hidden + (hidden * width + width) + (width * prefixes + prefixes)


def needs_attention(options: PrefixTuningMethod, config: ModelConfig) -> None:
    if not config.has_attention:
        raise SpecError(
            f"prefix_tuning adds key/value prefixes to attention layers, but {config.describe()} "
            "has no attention heads in its config",
            param="method.type",
        )


def unfreeze_refusal(options: PrefixTuningMethod) -> str:
    return (
        "gradual_unfreeze unfreezes layers from the top, but 'prefix_tuning' trains only tokens in front of "
        "the first layer: there is nothing to unfreeze layer by layer"
    )


def torch_half() -> MethodModel:
    from tuning.methods.prefix_tuning import model  # torch: imported when a model is built, not by the API

    return model


def peft_artifact() -> ArtifactLayout:
    from tuning.methods.prefix_tuning import artifact  # torch, like torch_half

    return artifact


def learning_rate(options: PrefixTuningMethod) -> PaperRate:
    # P-tuning v2 (Liu et al. 2022, arXiv:2110.07602) trains classification prefixes without the MLP
    # at 5e-3..1e-2. Li & Liang 2021 (section 5.1) train through the MLP at 5e-5..8e-5, but for 5-10
    # epochs of tens of thousands of examples, about 100 times the steps "auto" gives a small set; at
    # their rate a few hundred steps leave the prefix where it started, so 1e-3 (measured on the
    # tools docstring cut of tests/tuning/test_auto_learning.py: 24% -> 59% in 60 steps).
    if options.projection:
        return PaperRate(1e-3, "Li & Liang 2021, §5.1: 5e-5..8e-5 through the MLP, for ~100× the steps")
    return PaperRate(1e-2, "Liu et al. 2022, P-tuning v2: 5e-3..1e-2")


METHOD = register_method(
    name="prefix_tuning",
    options=PrefixTuningMethod,
    estimate=estimate,
    learning_rate=learning_rate,
    torch_half=torch_half,
    peft_artifact=peft_artifact,
    additive=True,
    mergeable=False,
    compat=[needs_attention],
    unfreeze_refusal=unfreeze_refusal,
    virtual_tokens=lambda options: options.num_virtual_tokens,
    virtual_keys_only=True,
)
