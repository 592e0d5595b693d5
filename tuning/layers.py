"""Where each parameter sits in the forward pass: embeddings, transformer layer i, or the top.

Layer-wise learning rates, gradual unfreezing, "the last N layers" and LoRA's layers_to_transform
all need the same map. The transformer layers are found generically, as the longest `nn.ModuleList`
inside the backbone (`bert.encoder.layer`, GPT-2's `transformer.h`, Llama's `model.layers`).
Depth 0 is everything before the stack (embeddings), depths 1..L the layers, L+1 the top: the head
and whatever the backbone runs after the stack (BERT's pooler, GPT-2's final LayerNorm).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from tuning.errors import SpecError


@dataclass(frozen=True)
class LayerMap:
    stack: str  # qualified name of the ModuleList holding the layers, e.g. "bert.encoder.layer"
    count: int  # L
    before: tuple[str, ...]  # backbone modules that run before the stack (depth 0)
    top: tuple[str, ...]  # head modules and backbone modules after the stack (depth L+1)

    def layer_of(self, name: str) -> int | None:
        """0-based index of the layer a parameter or module name lies in, or None outside the stack."""
        match = re.match(re.escape(self.stack) + r"\.(\d+)(\.|$)", name)
        return int(match.group(1)) if match else None

    def depth(self, name: str) -> int:
        """0 for embeddings, i+1 for layer i, L+1 for the top. Modules a method added at the model's
        top level (prompt or prefix encoders) act on the input, so they count as depth 0."""
        index = self.layer_of(name)
        if index is not None:
            return index + 1
        if _is_under(name, self.top):
            return self.count + 1
        return 0

    def distance_from_top(self, name: str) -> int:
        return self.count + 1 - self.depth(name)


def find_layers(model: nn.Module, head_modules: Sequence[str]) -> LayerMap:
    """Map `model` (call before a method rewrites it); raises SpecError when it has no layer stack."""
    stacks = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and not _is_under(name, head_modules)
    ]
    if not stacks:
        raise SpecError(
            "the base model has no stack of transformer layers (no nn.ModuleList)", param="base_model"
        )
    stack, layers = max(stacks, key=lambda item: len(item[1]))
    backbone = stack.split(".")[0] if "." in stack else ""
    before: list[str] = []
    top: list[str] = list(head_modules)
    seen_stack = False
    for name, _ in _leaf_owners(model, backbone):
        if name == stack or stack.startswith(name + "."):
            seen_stack = True
            continue
        if _is_under(name, top) or _is_under(name, before):
            continue
        (top if seen_stack else before).append(name)
    return LayerMap(stack, len(layers), tuple(before), tuple(top))


def _leaf_owners(model: nn.Module, backbone: str) -> list[tuple[str, nn.Module]]:
    """The backbone's direct children (and the stack's ancestors' siblings), in registration order."""
    owners: list[tuple[str, nn.Module]] = []
    root = model.get_submodule(backbone) if backbone else model

    def walk(prefix: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            owners.append((name, child))

    walk(backbone, root)
    # Nested stacks (bert.encoder.layer) sit one level down: list the siblings of each ancestor too.
    expanded: list[tuple[str, nn.Module]] = []
    for name, child in owners:
        if any(isinstance(m, nn.ModuleList) for m in child.children()) and not isinstance(
            child, nn.ModuleList
        ):
            for grandchild_name, grandchild in child.named_children():
                expanded.append((f"{name}.{grandchild_name}", grandchild))
        else:
            expanded.append((name, child))
    return expanded


def _is_under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
