"""BitFit (Ben Zaken et al. 2021, arXiv:2106.10199): b ← b − η·∂L/∂b for every bias b; all weights frozen.

Every bias of the backbone trains, LayerNorm's included, as in the paper (GPT-2's Conv1D layers have
biases too), plus the head, which trains whole with every method.
"""

from collections.abc import Sequence

from torch import nn

from tuning.errors import SpecError
from tuning.methods.apply import Applied, MethodContext
from tuning.methods.bitfit.options import BitFitMethod


def apply(model: nn.Module, options: BitFitMethod, context: MethodContext) -> Applied:
    biases = backbone_biases(model, context.head_modules)
    if not biases:
        raise SpecError("bitfit trains bias terms, but this base model has none", param="method.type")
    for parameter in biases.values():
        parameter.requires_grad_(True)
    count = sum(parameter.numel() for parameter in biases.values())
    return Applied(
        f"BitFit on {len(biases)} bias tensors ({count:,} values)",
        {"bias_tensors": len(biases), "bias_parameters": count},
    )


def backbone_biases(model: nn.Module, head_modules: Sequence[str]) -> dict[str, nn.Parameter]:
    """Every parameter named `bias` (nn.Linear, Conv1D, LayerNorm, ...) outside the head."""
    return {
        name: parameter
        for name, parameter in model.named_parameters()
        if name.rpartition(".")[2] == "bias" and not _is_under(name, head_modules)
    }


def _is_under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
