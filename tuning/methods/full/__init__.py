"""Full fine-tuning (Howard & Ruder 2018, arXiv:1801.06146): θ ← θ − η·∇L(θ) for every parameter θ.

The registration (options, estimate, traits) needs no torch; `model.py` is the torch half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuning.methods.base_model import ModelShapes
from tuning.methods.full.options import FullMethod
from tuning.methods.registry import PaperRate, register_method

if TYPE_CHECKING:
    from tuning.methods.apply import MethodModel

__all__ = ["METHOD", "FullMethod"]


def estimate(options: FullMethod, shapes: ModelShapes) -> int:
    """Every tensor of the base model."""
    return shapes.total()


def torch_half() -> MethodModel:
    from tuning.methods.full import model  # torch: imported when a model is built, not by the API

    return model


def learning_rate(options: FullMethod) -> PaperRate:
    # BERT fine-tunes every weight at 5e-5, 3e-5 or 2e-5 with batch 16 or 32 (Devlin et al. 2018,
    # appendix A.3); the top of that grid, since a few hundred steps is all "auto" gives it.
    return PaperRate(5e-5, "Devlin et al. 2018, BERT, A.3: 2e-5..5e-5")


METHOD = register_method(
    name="full",
    options=FullMethod,
    estimate=estimate,
    learning_rate=learning_rate,
    torch_half=torch_half,
    additive=False,
    mergeable=True,
)
