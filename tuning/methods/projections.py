"""The layers LoRA and delta tuning wrap, and how they are found and replaced: `nn.Linear` and GPT-2's
`Conv1D` (y = x·Wᵀ + b, whichever way round W is stored), matched by name as PEFT matches them.

Shared by `lora`, `delta` and the merged export.
"""

from collections.abc import Collection, Mapping

from torch import nn
from transformers.pytorch_utils import Conv1D

Projection = nn.Linear | Conv1D


def projections(model: nn.Module, exclude: Collection[str] = ()) -> dict[str, Projection]:
    """Every `nn.Linear` and `Conv1D` outside `exclude`, by qualified name, in model order."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, Projection) and not _is_under(name, exclude)
    }


def projection_features(layer: Projection) -> tuple[int, int]:
    """(in, out) features of an `nn.Linear` or a `Conv1D` (whose W is stored (in, out))."""
    if isinstance(layer, Conv1D):
        return layer.nx, layer.nf
    return layer.in_features, layer.out_features


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child_name = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child_name, module)


def pattern_value(pattern: Mapping[str, int], name: str, default: int) -> int:
    """The value of the first key naming `name` (exactly or as a dotted suffix), PEFT's rank_pattern."""
    return next((value for key, value in pattern.items() if matches_target(name, key)), default)


def matches_target(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def linear_suffixes(linears: Collection[str]) -> list[str]:
    """The distinct last components of Linear names ("query", "dense", ...), what users target."""
    return sorted({name.rpartition(".")[2] for name in linears})


def _is_under(name: str, prefixes: Collection[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
