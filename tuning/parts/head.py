"""The task head: a linear layer (the model class's own) or a small MLP in its place."""

from collections.abc import Sequence

from torch import nn

from tuning.spec import HeadSpec


def build_head(model: nn.Module, head_modules: Sequence[str], spec: HeadSpec, num_labels: int) -> list[str]:
    """Give `model` the head `spec` asks for; return the head module names (trainable)."""
    if spec.type == "linear":
        return list(head_modules)
    raise NotImplementedError("mlp heads")  # TODO(head): replace the last Linear of the head by an MLP
