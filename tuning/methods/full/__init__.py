"""Full fine-tuning (Howard & Ruder 2018, arXiv:1801.06146): θ ← θ − η·∇L(θ) for every parameter θ.

The registration (options, estimate, traits) needs no torch; `model.py` is the torch half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuning.methods.base_model import ModelShapes
from tuning.methods.full.options import FullMethod
from tuning.methods.registry import register_method

if TYPE_CHECKING:
    from tuning.methods.apply import MethodModel

__all__ = ["METHOD", "FullMethod"]


def estimate(options: FullMethod, shapes: ModelShapes) -> int:
    """Every tensor of the base model."""
    return shapes.total()


def torch_half() -> MethodModel:
    from tuning.methods.full import model  # torch: imported when a model is built, not by the API

    return model


METHOD = register_method(
    name="full",
    options=FullMethod,
    estimate=estimate,
    torch_half=torch_half,
    additive=False,
    mergeable=True,
)
