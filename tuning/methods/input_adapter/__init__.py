"""Input adapter (Pfeiffer et al., 2021, UNKs Everywhere, arXiv:2012.15562): e ← e + up(act(down(e))) on
the word embeddings, plus optional new domain tokens whose embedding rows alone train.

The registration (options, estimate, traits) needs no torch; `model.py` is the torch half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuning.methods.base_model import ModelShapes
from tuning.methods.input_adapter.options import InputAdapterMethod
from tuning.methods.registry import PaperRate, register_method

if TYPE_CHECKING:
    from tuning.methods.apply import MethodModel

__all__ = ["METHOD", "InputAdapterMethod"]


def estimate(options: InputAdapterMethod, shapes: ModelShapes) -> int:
    """One bottleneck on the embeddings, and a row per new token (each taken to be new to the vocabulary:
    a token it already holds adds no row, which only the tokenizer can tell)."""
    return (
        shapes.bottleneck(options.reduction_factor, options.bottleneck_size)
        + len(options.new_tokens) * shapes.hidden
    )


def torch_half() -> MethodModel:
    from tuning.methods.input_adapter import model  # torch: imported when a model is built, not by the API

    return model


def learning_rate(options: InputAdapterMethod) -> PaperRate:
    # Pfeiffer et al. 2021 train their invertible and embedding adapters with the task adapters' rate
    # (AdapterHub's 1e-4, tens of epochs); a zero-initialised encoder under a short job needs the
    # bottleneck adapters' upper end (Houlsby et al. 2019, §3.1: 3e-5..3e-3).
    return PaperRate(1e-3, "Houlsby et al. 2019, §3.1: 3e-5..3e-3, as bottleneck adapters")


METHOD = register_method(
    name="input_adapter",
    options=InputAdapterMethod,
    estimate=estimate,
    learning_rate=learning_rate,
    torch_half=torch_half,
    additive=True,
    mergeable=False,
)
