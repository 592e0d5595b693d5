"""Delta tuning (Ding et al. 2022, arXiv:2203.06904): h = (W + Δw)·x + b, W frozen, Δw (zero at init) trained.

The registration (options, estimate, traits) needs no torch; `model.py` is the torch half. Its Δw
is what `export.lora_rank` / `lora_energy` compress to LoRA (tuning/artifacts/compress.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tuning.methods.base_model import ModelConfig, ModelShapes
from tuning.methods.delta.options import DeltaMethod
from tuning.methods.registry import PaperRate, register_method
from tuning.methods.targets import check_targets

if TYPE_CHECKING:
    from tuning.methods.apply import MethodModel

__all__ = ["METHOD", "DeltaMethod"]


def estimate(options: DeltaMethod, shapes: ModelShapes) -> int:
    """A Δw of each targeted weight's shape (every non-embedding 2-D weight without targets)."""
    return sum(math.prod(shape) for _, shape in shapes.linear_weights(options.target_modules))


def targets_exist(options: DeltaMethod, config: ModelConfig) -> None:
    """Every target_modules name names a layer (none given: all of them, nothing to check)."""
    if options.target_modules is not None:
        check_targets(options.target_modules, config, param="method.target_modules")


def torch_half() -> MethodModel:
    from tuning.methods.delta import model  # torch: imported when a model is built, not by the API

    return model


def learning_rate(options: DeltaMethod) -> PaperRate:
    # Δw's trajectory is the full fine-tune's of the same weights (W + Δw, W frozen): BERT's rates
    # (Devlin et al. 2018, A.3: 2e-5..5e-5), the top of the grid as for `full`.
    return PaperRate(5e-5, "Devlin et al. 2018, BERT, A.3: 2e-5..5e-5, as full fine-tuning")


METHOD = register_method(
    name="delta",
    options=DeltaMethod,
    estimate=estimate,
    learning_rate=learning_rate,
    torch_half=torch_half,
    additive=False,
    mergeable=True,
    compresses_to_lora=True,
    compat=[targets_exist],
    frozen_base=lambda _: True,  # W stays as loaded; Δw is a new tensor beside it
)
