"""Bottleneck adapters (Houlsby et al., 2019, arXiv:1902.00751; Pfeiffer et al., 2020, arXiv:2005.00247):
h ← h + up(act(down(h))) on a sublayer's output projection, every pretrained weight frozen.

The registration (options, estimate, traits) needs no torch; `model.py` is the torch half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuning.methods.adapter.options import AdapterMethod
from tuning.methods.base_model import ModelShapes
from tuning.methods.registry import PaperRate, register_method

if TYPE_CHECKING:
    from tuning.methods.apply import MethodModel

__all__ = ["METHOD", "AdapterMethod"]


def estimate(options: AdapterMethod, shapes: ModelShapes) -> int:
    """One bottleneck per layer (Pfeiffer), or two (Houlsby: after attention and after the feed-forward)."""
    per_layer = 2 if options.placement == "houlsby" else 1
    return shapes.layers * per_layer * shapes.bottleneck(options.reduction_factor, options.bottleneck_size)


def torch_half() -> MethodModel:
    from tuning.methods.adapter import model  # torch: imported when a model is built, not by the API

    return model


def learning_rate(options: AdapterMethod) -> PaperRate:
    # Houlsby et al. 2019 (section 3.1) search {3e-5, 3e-4, 3e-3}; Pfeiffer et al.'s AdapterHub trains
    # at 1e-4 for 10+ epochs. Adapters start at identity, so a short job needs the upper end.
    return PaperRate(1e-3, "Houlsby et al. 2019, §3.1: 3e-5..3e-3")


METHOD = register_method(
    name="adapter",
    options=AdapterMethod,
    estimate=estimate,
    learning_rate=learning_rate,
    torch_half=torch_half,
    additive=True,
    mergeable=False,
)
