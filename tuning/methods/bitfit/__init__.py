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
    # Ben Zaken et al. 2021 (section 3) search {1e-4, 4e-4, 7e-4, 1e-3} over GLUE's thousands of steps;
    # in auto's ~150 the top of it leaves the biases short, as prompts and adapters (their own rates)
    # would be. Measured on the tools docstrings' validation cut (benchmarks.auto_hyperparameters
    # --choose, 128 tokens, one run each): 0.835 at 1e-3, 0.894 at 3e-3, 0.856 at 1e-2; the probe 0.860.
    return PaperRate(3e-3, "Ben Zaken et al. 2021, BitFit, §3: 1e-4..1e-3 over longer runs; 3×, measured")


METHOD = register_method(
    name="bitfit",
    options=BitFitMethod,
    estimate=estimate,
    learning_rate=learning_rate,
    torch_half=torch_half,
    additive=False,
    mergeable=True,
)
