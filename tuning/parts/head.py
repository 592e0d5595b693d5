"""The task head: a linear layer (the model class's own) or a small MLP in its place.

An MLP head replaces only the final `nn.Linear` that produces the logits (BERT's `classifier`,
GPT-2's `score`, RoBERTa's `classifier.out_proj`): Dropout → Linear(in, hidden) → activation →
Dropout → Linear(hidden, labels). Whatever the model class does before it (pooling, the last-token
pick of GPT-style models, its own dropout) stays, so the head module names do not change and the
head trains, saves and reloads under them like a linear one.
"""

from collections.abc import Sequence

from torch import nn

from tuning.activations import make_activation
from tuning.errors import SpecError
from tuning.spec import HeadSpec
from tuning.spec_base import Activation


def build_head(model: nn.Module, head_modules: Sequence[str], spec: HeadSpec, num_labels: int) -> list[str]:
    """Give `model` the head `spec` asks for; return the head module names (trainable).

    Draws the MLP's initial weights from torch's global generator: seed first for a repeatable job.
    """
    if spec.type == "linear":
        return list(head_modules)
    name = logits_layer(model, head_modules, num_labels)
    final = model.get_submodule(name)
    assert isinstance(final, nn.Linear)  # logits_layer only returns Linear layers
    mlp = mlp_head(
        final.in_features,
        spec.hidden_size or final.in_features,
        num_labels,
        activation=spec.activation,
        dropout=spec.dropout,
        bias=final.bias is not None,  # GPT-2's score is bias-free: keep the model class's choice
    )
    parent_name, _, child_name = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child_name, mlp.to(device=final.weight.device, dtype=final.weight.dtype))
    return list(head_modules)


def mlp_head(
    in_dim: int, hidden_dim: int, out_dim: int, *, activation: Activation, dropout: float, bias: bool = True
) -> nn.Sequential:
    """Dropout → Linear(in, hidden) → activation → Dropout → Linear(hidden, out); every part trains."""
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_dim, hidden_dim),
        make_activation(activation),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, out_dim, bias=bias),
    )


def logits_layer(model: nn.Module, head_modules: Sequence[str], num_labels: int) -> str:
    """Name of the last `nn.Linear` in the head with `num_labels` outputs: the one producing the logits.

    The model class's own head modules come before backbone modules that merely missed from the
    checkpoint (see tuning.task_model), and only those are searched when they hold a candidate.
    """
    backbone = getattr(model, "base_model_prefix", "")
    own = [name for name in head_modules if name.split(".")[0] != backbone]
    for searched in (own, head_modules):
        found = [
            name
            for head in searched
            for name, module in model.get_submodule(head).named_modules(prefix=head)
            if isinstance(module, nn.Linear) and module.out_features == num_labels
        ]
        if found:
            return found[-1]
    raise SpecError(
        f"an 'mlp' head replaces the head's final nn.Linear with {num_labels} outputs, but the head "
        f"modules {list(head_modules)} hold none; use the 'linear' head",
        param="head.type",
    )
