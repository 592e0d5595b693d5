"""LoRA (Hu et al., 2021, arXiv:2106.09685): h = W·x + s·B·A·dropout(x), W frozen, A and B trained,
s = alpha/r (alpha/√r with rsLoRA, arXiv:2312.03732); LoRA+ (arXiv:2402.12354) trains B faster.

The registration (options, estimate, config check, traits) needs no torch; `model.py` is the torch
half and `artifact.py` writes PEFT's layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from tuning.errors import SpecError
from tuning.methods.base_model import ModelConfig, ModelShapes, layer_index
from tuning.methods.lora.options import LoraMethod
from tuning.methods.registry import Branches, PaperRate, register_method
from tuning.methods.targets import check_targets

if TYPE_CHECKING:
    from tuning.artifacts.job import ArtifactLayout
    from tuning.methods.apply import MethodModel

__all__ = ["METHOD", "LoraMethod"]


def estimate(options: LoraMethod, shapes: ModelShapes) -> int:
    """r·(in + out) per targeted weight, r from rank_pattern where it names the module."""
    return sum(
        rank(module, options.rank_pattern, options.r) * (shape[0] + shape[1])
        for module, shape in shapes.linear_weights(options.target_modules)
    )


def branches(options: LoraMethod, shapes: ModelShapes) -> Branches:
    """One low-rank branch per adapted weight (within layers_to_transform): it reads the layer's input
    (in features: a Linear's weight is (out, in), GPT-2's Conv1D's (in, out)) and keeps r per token."""
    conv1d = str(shapes.config.get("model_type", "")) == "gpt2"
    adapted = [
        (module, shape)
        for module, shape in shapes.linear_weights(options.target_modules)
        if options.layers_to_transform is None or layer_index(module) in options.layers_to_transform
    ]
    return Branches(
        modules=len(adapted),
        inputs=sum(shape[0] if conv1d else shape[1] for _, shape in adapted),
        ranks=sum(rank(module, options.rank_pattern, options.r) for module, _ in adapted),
        dropout=options.dropout,
        weights=sum(shape[0] * shape[1] for _, shape in adapted),
    )


def rank(module: str, ranks: Mapping[str, int], default: int) -> int:
    return next((r for key, r in ranks.items() if module == key or module.endswith("." + key)), default)


def layers_exist(options: LoraMethod, config: ModelConfig) -> None:
    count = config.layers
    if count is None or options.layers_to_transform is None:
        return
    missing = sorted(index for index in set(options.layers_to_transform) if index >= count)
    if missing:
        raise SpecError(
            f"layers_to_transform names layers {missing}, but {config.describe()} has {count} "
            f"transformer layers, numbered 0 to {count - 1}",
            param="method.layers_to_transform",
        )


def targets_exist(options: LoraMethod, config: ModelConfig) -> None:
    """Every target_modules name (within layers_to_transform) and rank_pattern key names a layer."""
    check_targets(
        options.target_modules, config, param="method.target_modules", layers=options.layers_to_transform
    )
    check_targets(list(options.rank_pattern), config, param="method.rank_pattern")


def torch_half() -> MethodModel:
    from tuning.methods.lora import model  # torch: imported when a model is built, not by the API

    return model


def peft_artifact() -> ArtifactLayout:
    from tuning.methods.lora import artifact  # torch, like torch_half

    return artifact


def learning_rate(options: LoraMethod) -> PaperRate:
    # Hu et al. 2021 (appendix D, table 9) train RoBERTa-base's LoRA at 4e-4..5e-4 with batch 16.
    return PaperRate(5e-4, "Hu et al. 2021, LoRA, table 9: 4e-4..5e-4 at batch 16")


METHOD = register_method(
    name="lora",
    options=LoraMethod,
    estimate=estimate,
    learning_rate=learning_rate,
    torch_half=torch_half,
    peft_artifact=peft_artifact,
    additive=False,
    mergeable=True,
    compat=[layers_exist, targets_exist],
    lowest_layer=lambda options, _shapes: min(options.layers_to_transform or [0]),
    frozen_base=lambda _: True,
    branches=branches,
)
