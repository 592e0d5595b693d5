"""Memory for big models: gradient checkpointing, and a frozen base held in bf16 on CUDA.

- `hyperparameters.gradient_checkpointing`: transformers' `activation_checkpointing_enable` (before 5.x
  `gradient_checkpointing_enable`), non-reentrant
  (torch.utils.checkpoint with use_reentrant=False), so a frozen base whose inputs need no gradient
  (LoRA, adapters, prompts) still passes gradients to what trains, and dropout draws the same masks
  when a layer is recomputed: the same training, one more forward per step, each layer keeping only
  its input for backward.
- A method that trains only new tensors (LoRA, delta, adapters, prompts and prefixes, a linear probe:
  the registry's `frozen_base`) keeps the frozen base in bf16 on CUDA under mixed precision, halving
  the weights' memory; what trains stays float32, and so does the saved delta. Evaluations of such a
  model run under autocast (its matmuls were bf16 in training too), and `restore_float32` puts the
  base back in float32 before export. Untested on a GPU so far: the device guard keeps it off CPUs.
"""

import torch
from torch import nn

from tuning.errors import SpecError
from tuning.methods import method_entry
from tuning.spec import JobSpec


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute each layer's activations during backward; SpecError where the model cannot."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise SpecError(
            f"{type(model).__name__} does not support gradient checkpointing",
            param="hyperparameters.gradient_checkpointing",
        )
    options = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)  # its name from transformers 5.x on
    if enable is not None:
        enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)  # type: ignore[operator]


def keeps_base_in_bf16(spec: JobSpec, device: torch.device) -> bool:
    """On CUDA, for a method that trains only new tensors, unless mixed_precision is "no"
    (tuning.estimate.bf16_base counts memory by the same rule)."""
    frozen_base = method_entry(spec.method.type).frozen_base(spec.method)
    return device.type == "cuda" and frozen_base and spec.hyperparameters.mixed_precision != "no"


def cast_frozen_to_bf16(model: nn.Module) -> int:
    """Cast every frozen floating-point parameter to bf16; what trains stays float32. Returns how many
    parameters were cast."""
    cast = 0
    for parameter in model.parameters():
        if not parameter.requires_grad and parameter.is_floating_point():
            parameter.data = parameter.data.to(torch.bfloat16)
            cast += parameter.numel()
    return cast


def holds_bf16(model: nn.Module) -> bool:
    """Whether a frozen part of `model` is held in bf16 (its forward then needs autocast)."""
    return any(parameter.dtype == torch.bfloat16 for parameter in model.parameters())


def restore_float32(model: nn.Module) -> None:
    """The base back in float32 (the values bf16 rounded them to), for export and CPU inference."""
    for parameter in model.parameters():
        if parameter.dtype == torch.bfloat16:
            parameter.data = parameter.data.float()
