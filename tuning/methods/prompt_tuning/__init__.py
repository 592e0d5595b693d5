"""Prompt tuning (Lester et al., 2021, arXiv:2104.08691): h = f([P; E(x)]), P ∈ R^(n×d) trained, f frozen.

The registration (options, estimate, config check, traits) needs no torch; `model.py` is the torch
half and `artifact.py` writes PEFT's layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuning.errors import SpecError
from tuning.methods.base_model import ModelConfig, ModelShapes
from tuning.methods.prompt_tuning.options import PromptTuningMethod
from tuning.methods.registry import PaperRate, register_method

if TYPE_CHECKING:
    from tuning.artifacts.job import ArtifactLayout
    from tuning.methods.apply import MethodModel

__all__ = ["METHOD", "PromptTuningMethod"]


def estimate(options: PromptTuningMethod, shapes: ModelShapes) -> int:
    """n virtual tokens of the model's width."""
    return options.num_virtual_tokens * shapes.hidden


def leaves_room_for_text(options: PromptTuningMethod, config: ModelConfig) -> None:
    # Virtual tokens take positions of their own: with all of them taken, no text reaches the model.
    limit, virtual = config.positions, options.num_virtual_tokens
    if limit is not None and virtual >= limit:
        raise SpecError(
            f"num_virtual_tokens {virtual} leaves no room for text in {config.name}'s {limit} positions",
            param="method.num_virtual_tokens",
        )


def unfreeze_refusal(options: PromptTuningMethod) -> str:
    return (
        "gradual_unfreeze unfreezes layers from the top, but 'prompt_tuning' trains only tokens in front of "
        "the first layer: there is nothing to unfreeze layer by layer"
    )


def torch_half() -> MethodModel:
    from tuning.methods.prompt_tuning import model  # torch: imported when a model is built, not by the API

    return model


def peft_artifact() -> ArtifactLayout:
    from tuning.methods.prompt_tuning import artifact  # torch, like torch_half

    return artifact


def learning_rate(options: PromptTuningMethod) -> PaperRate:
    # Lester et al. 2021 (section 3) train prompts at 0.3 with Adafactor, whose step is relative to the
    # parameter's scale; with AdamW's absolute steps P-tuning v2 (Liu et al. 2022, arXiv:2110.07602)
    # tunes prompts at 5e-3..1e-2 over many epochs, so a short job takes a few times that.
    return PaperRate(3e-2, "Lester et al. 2021: 0.3 with Adafactor; AdamW: Liu et al. 2022, 5e-3..1e-2")


METHOD = register_method(
    name="prompt_tuning",
    options=PromptTuningMethod,
    estimate=estimate,
    learning_rate=learning_rate,
    torch_half=torch_half,
    peft_artifact=peft_artifact,
    additive=True,
    mergeable=False,
    compat=[leaves_room_for_text],
    unfreeze_refusal=unfreeze_refusal,
    virtual_tokens=lambda options: options.num_virtual_tokens,
)
