"""θ₀: the pretrained values of the weights a job trains directly, kept to measure how far they moved.

L2-SP and EWC penalise θ−θ₀, and deltatune's artifact layout stores θ−θ₀ (the dense delta) for
every pretrained tensor the job changed. Only trainable tensors are copied, so a LoRA job keeps
nothing here and a full fine-tune keeps one copy of the model.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PretrainedSnapshot:
    values: dict[str, torch.Tensor]  # parameter name → θ₀, on the parameter's device

    @classmethod
    def take(cls, model: nn.Module, pretrained_names: frozenset[str]) -> "PretrainedSnapshot":
        """Copy θ₀ of every parameter that requires grad and came from the checkpoint."""
        return cls(
            {
                name: parameter.detach().clone()
                for name, parameter in model.named_parameters()
                if parameter.requires_grad and name in pretrained_names
            }
        )

    def deviations(self, model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, θ−θ₀) with grad, for every snapshotted parameter."""
        parameters = dict(model.named_parameters())
        for name, start in self.values.items():
            yield name, parameters[name] - start

    def to(self, device: str | torch.device) -> "PretrainedSnapshot":
        return PretrainedSnapshot({name: value.to(device) for name, value in self.values.items()})
