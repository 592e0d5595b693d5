"""L2-SP (Li et al. 2018, arXiv:1802.01483): L = task + α·Σ‖θ−θ₀‖² (shared weights) + β·Σ‖θ‖² (new weights).

The two terms have two weights in the spec (`weight` = α, `new_weight` = β), so they are two penalties
here, each reported unweighted under its own name: `l2sp` is Σ‖θ−θ₀‖² over every pretrained weight the
method changes (directly, or through LoRA's or delta's own tensors), `l2sp_new` is Σ‖θ‖² over the
parameters the job added (head, adapters). `l2sp_new` exists only when `new_weight` > 0.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from tuning.batching import Batch
from tuning.methods.apply import Deviations
from tuning.regularizers import Regularizer, RegularizerContext
from tuning.spec.parts import L2SPRegularizer

logger = logging.getLogger(__name__)


@dataclass
class TowardPretrained:
    """Σ‖θ−θ₀‖² over every (name, θ−θ₀) the method reports."""

    weight: float
    deviations: Deviations
    name: str = "l2sp"

    def penalty(self, model: nn.Module, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        return sum_of_squares((deviation for _, deviation in self.deviations()), logits.device)


@dataclass
class NewParameters:
    """Σ‖θ‖² over the parameters the job added: plain weight decay as a loss term."""

    weight: float
    parameters: list[torch.Tensor]
    name: str = "l2sp_new"

    def penalty(self, model: nn.Module, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        return sum_of_squares(self.parameters, logits.device)


def make(options: L2SPRegularizer, context: RegularizerContext) -> list[Regularizer]:
    if not any(True for _ in context.deviations()):
        # The spec refuses methods that train no pretrained weight; this is a method that trains some
        # but does not report them (yet), so the user learns why `l2sp` stays 0.
        logger.warning("l2sp: the method reports no pretrained weight it changes; the penalty stays 0")
    chosen: list[Regularizer] = [TowardPretrained(options.weight, context.deviations)]
    if options.new_weight > 0:
        chosen.append(NewParameters(options.new_weight, [p for _, p in context.new_parameters]))
    return chosen


def sum_of_squares(tensors: Iterable[torch.Tensor], device: torch.device) -> torch.Tensor:
    total = torch.zeros((), device=device)
    for tensor in tensors:
        total = total + tensor.float().pow(2).sum()
    return total
