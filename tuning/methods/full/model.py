"""Full fine-tuning (Howard & Ruder 2018, arXiv:1801.06146): θ ← θ − η·∇L(θ) for every parameter θ.

The pretrained weights are only the starting point. The artifact is the dense delta θ−θ₀ of every
pretrained tensor (deltatune's layout), or a merged model.
"""

from torch import nn

from tuning.methods.apply import Applied, MethodContext
from tuning.methods.full.options import FullMethod


def apply(model: nn.Module, options: FullMethod, context: MethodContext) -> Applied:
    model.requires_grad_(True)
    tensors = sum(1 for _ in model.parameters())
    return Applied(
        f"full fine-tune of all {tensors} parameter tensors",
        {"trained_tensors": tensors, "layers": context.layers.count},
    )
