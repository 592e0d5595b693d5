"""The mean-pooling stand-in for a BERT pooler (`head.pooling` "mean", tuning.parts.pooling says when).

Apart from tuning.parts.pooling because it needs torch, which the API's process never imports.
"""

from typing import Any

import torch
from torch import nn

from tuning.errors import SpecError
from tuning.parts.pooling import mean_refusal


class MeanPooler(nn.Module):
    """Stands in for a BERT pooler: the mean of the hidden states over the backbone's attention mask.

    The pooler is called with the hidden states only; a forward pre-hook on the backbone (installed by
    `use_mean_pooling`) hands it the mask of the same call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mask: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask, self.mask = self.mask, None
        return masked_mean(hidden_states, mask)


def masked_mean(hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the positions where `mask` is 1; a mask longer than the states (prefix tuning's
    virtual columns in front) is cut to its last columns."""
    if mask is None:
        return hidden_states.mean(dim=1)
    weights = mask[:, -hidden_states.shape[1] :].to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def use_mean_pooling(model: nn.Module) -> None:
    """Replace the backbone's pooler of a BERT-style classifier with `MeanPooler`."""
    backbone = model.get_submodule(getattr(model, "base_model_prefix", ""))
    if not hasattr(backbone, "pooler"):
        raise SpecError(
            mean_refusal(getattr(model.config, "model_type", "")) or "no pooler", param="head.pooling"
        )
    backbone.pooler = MeanPooler()
    backbone.register_forward_pre_hook(_hand_mask, with_kwargs=True)


def _hand_mask(backbone: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Give the backbone's MeanPooler the call's attention mask (a module-level function, not a
    closure: a deep copy of the model, or a pickled one, hands it to its own pooler)."""
    mask = kwargs.get("attention_mask")
    if mask is None and len(args) > 1:
        mask = args[1]
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, MeanPooler):
        pooler.mask = mask
