"""BitFit (Ben Zaken et al. 2021, arXiv:2106.10199): b ← b − η·∂L/∂b for every bias b; all weights frozen.

The registration (options, estimate, traits) needs no torch; `model.py` is the torch half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuning.methods.base_model import ModelShapes
from tuning.methods.bitfit.options import BitFitMethod
from tuning.methods.registry import PaperRate, register_method

if TYPE_CHECKING:
    from tuning.methods.apply import MethodModel

__all__ = ["METHOD", "BitFitMethod"]


def estimate(options: BitFitMethod, shapes: ModelShapes) -> int:
    """Every bias tensor."""
    return shapes.biases()


def torch_half() -> MethodModel:
    from tuning.methods.bitfit import model  # torch: imported when a model is built, not by the API

    return model


def learning_rate(options: BitFitMethod) -> PaperRate:
    # Ben Zaken et al. 2021 (section 3) search {1e-4, 4e-4, 7e-4, 1e-3}: biases are few and small, so
    # they take the largest of them.
    return PaperRate(1e-3, "Ben Zaken et al. 2021, BitFit, §3: 1e-4..1e-3")


METHOD = register_method(
    name="bitfit",
    options=BitFitMethod,
    estimate=estimate,
    learning_rate=learning_rate,
    torch_half=torch_half,
    additive=False,
    mergeable=True,
)
