"""Penalties that keep fine-tuning cautious: L2-SP toward the pretrained weights, KL toward the
pretrained model's outputs, EWC weighted by the Fisher information of a source task.

Each regularizer computes its *unweighted* penalty for one batch; the training loop adds
weight × penalty to the task loss and reports every unweighted value beside the task loss. A spec
entry may make more than one penalty when it has more than one weight (L2-SP's `l2sp` toward θ₀ and
`l2sp_new` on added parameters), so that every reported value is one plain sum with one weight.
"""

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from tuning.batching import Batch
from tuning.methods.apply import Deviations
from tuning.spec import Regularizers


class Regularizer(Protocol):
    name: str  # the spec's key ("l2sp", "kl", "ewc"), or a key of its own for a second term ("l2sp_new")
    weight: float

    def penalty(self, model: nn.Module, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        """The unweighted penalty (a scalar with grad) for the batch whose float32 logits are given."""
        ...


@dataclass
class RegularizerContext:
    """What fit.py hands every regularizer, all on the training device."""

    # Every (pretrained weight name, current θ−θ₀) pair, for weights trained directly and for those
    # a method changes through its own tensors (LoRA, delta).
    deviations: Deviations
    new_parameters: Sequence[tuple[str, torch.Tensor]]  # trainable parameters the job added (head, adapters)
    reference_model: nn.Module | None  # frozen copy of the model before the method ran (kl only)
    fisher: dict[str, torch.Tensor] | None  # diagonal Fisher by pretrained weight name (ewc only)


class RegularizerModule(Protocol):
    def make(self, options: Any, context: RegularizerContext) -> list[Regularizer]: ...


def make_regularizers(spec: Regularizers, context: RegularizerContext) -> list[Regularizer]:
    """The penalties of every regularizer the spec names; each lives in `tuning/regularizers/<name>.py`."""
    chosen: list[Regularizer] = []
    for name in ("l2sp", "kl", "ewc"):
        options = getattr(spec, name)
        if options is not None:
            module: RegularizerModule = importlib.import_module(f"tuning.regularizers.{name}")  # type: ignore[assignment]
            chosen.extend(module.make(options, context))
    return chosen
