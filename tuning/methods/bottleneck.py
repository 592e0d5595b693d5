"""Bottleneck adapter (Houlsby et al., 2019, arXiv:1902.00751): h + up(act(down(h))), up zero-initialised.

Shared by `adapter` (inside every transformer layer) and `input_adapter` (on the input embeddings).
Houlsby et al. initialise near the identity; a zero `up` is the exact form of the same idea: the
block returns its input unchanged until the first update, so the adapted model starts as the base.
"""

import torch
from torch import nn

from tuning.activations import make_activation
from tuning.spec_base import Activation


class Bottleneck(nn.Module):
    """A residual down-projection, non-linearity and up-projection over the last dimension."""

    def __init__(self, dim: int, bottleneck: int, activation: Activation = "relu") -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = make_activation(activation)
        self.up = nn.Linear(bottleneck, dim)
        # `down` keeps nn.Linear's Kaiming-uniform init: with `up` at zero only `up` gets a gradient
        # at the first step, and that gradient is proportional to act(down(h)), so `down` must not be
        # near zero or the block would barely move.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


def bottleneck_width(dim: int, reduction_factor: int | None, bottleneck_size: int | None) -> int:
    """bottleneck_size when given, else dim // reduction_factor (at least 1)."""
    if bottleneck_size is not None:
        return bottleneck_size
    return max(1, dim // (reduction_factor or 1))
