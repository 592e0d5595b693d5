"""The activations a spec may name (`tuning.spec_base.Activation`), as torch modules."""

from torch import nn

from tuning.spec_base import Activation

ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
}


def make_activation(name: Activation) -> nn.Module:
    return ACTIVATIONS[name]()
