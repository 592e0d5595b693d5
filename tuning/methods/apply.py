"""Applying a method to a model: what its torch half gets (`MethodContext`) and returns (`Applied`).

Every method's torch half (`tuning/methods/<type>/model.py`) exposes one function,

    apply(model: nn.Module, options: <its options model>, context: MethodContext) -> Applied

which rewrites `model` in place (wrapping layers, adding child modules, registering hooks) so that
exactly the method's parameters, plus the head's, require grad. The model stays the module the
training loop calls with `input_ids` and `attention_mask`.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from tuning.layers import LayerMap
from tuning.methods import method_entry
from tuning.spec import Method

# (pretrained weight name, its current change) for every weight a method changes through tensors
# of its own: LoRA's (alpha/r)·B·A, delta tuning's Δw. Names are the weights' names before the method
# wrapped them (`...query.weight`), the names a regularizer's θ₀ and Fisher use.
Deviations = Callable[[], Iterator[tuple[str, torch.Tensor]]]


@dataclass
class MethodContext:
    tokenizer: PreTrainedTokenizerBase  # a method that adds tokens adds them here, before data is encoded
    head_modules: Sequence[str]  # trained in full by every method; never wrapped
    layers: LayerMap  # mapped before the method ran


@dataclass
class Applied:
    summary: str  # one line for the "training started" event, e.g. "LoRA on 24 Linear layers"
    details: dict[str, Any] = field(default_factory=dict)  # for the same event, JSON-safe
    lr_scales: dict[str, float] = field(default_factory=dict)  # parameter name → lr multiplier (LoRA+)
    deviations: Deviations | None = None


class MethodModel(Protocol):
    """A method's torch half, as its registry entry's `torch_half()` returns it."""

    def apply(self, model: nn.Module, options: Any, context: MethodContext) -> Applied: ...


def apply_method(model: nn.Module, method: Method, context: MethodContext) -> Applied:
    return method_entry(method.type).torch_half().apply(model, method, context)


def trainable_names(model: nn.Module) -> list[str]:
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]
