"""Layer-wise learning rates (ULMFiT's discriminative fine-tuning, arXiv:1801.06146): lr_l = lr·decay^(L+1−l).

The head and the backbone modules after the stack get the job's rate, the last layer lr·decay, ...,
the embeddings lr·decay^(L+1): the lower a layer, the more general its features, the less it should
move. The scales multiply into `tuning.optim.parameter_groups` (fit.py), one group per scale.
"""

from torch import nn

from tuning.layers import LayerMap


def layer_lr_scales(model: nn.Module, layers: LayerMap, decay: float) -> dict[str, float]:
    """Learning-rate multiplier of every parameter that requires grad, by name."""
    return {
        name: decay ** layers.distance_from_top(name)
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }
