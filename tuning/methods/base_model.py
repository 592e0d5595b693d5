"""What a method's torch-free rules read of the base model before anything loads: its `config.json`
(`ModelConfig`, for the compatibility checks) and its tensor shapes (`ModelShapes`, for the dry run's
trainable-parameter estimate).

Imports no torch and nothing of `tuning.spec`: method packages use it while the spec is being built.
"""

import fnmatch
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Config keys for the same quantity across the families transformers uses (BERT, GPT-2, DistilBERT, T5).
HEADS = ("num_attention_heads", "n_head", "n_heads", "num_heads")
LAYERS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
POSITIONS = ("max_position_embeddings", "n_positions")

# "encoder.layer.3.", "h.3.", "layers.3.": the index of a transformer layer in a tensor's name.
LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")

Shapes = Mapping[str, tuple[int, ...]]


def layer_index(module: str) -> int | None:
    """The transformer layer a module name (no trailing dot) is inside; None: outside the layers."""
    found = LAYER_INDEX.search(module + ".")
    return int(found.group(1)) if found else None


def config_int(config: Mapping[str, Any], keys: Sequence[str]) -> int | None:
    """The first of `keys` the config sets to a positive integer (a bool is not a size)."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class ModelConfig:
    """A base model's `config.json`, read for what a compatibility rule asks; None where it is silent,
    and its tensor names and shapes from the safetensors headers (empty for a model without them)."""

    name: str  # the spec's base_model, for messages
    values: Mapping[str, Any]
    tensors: Shapes = field(default_factory=dict)

    @property
    def layers(self) -> int | None:
        return config_int(self.values, LAYERS)

    @property
    def heads(self) -> int | None:
        return config_int(self.values, HEADS)

    @property
    def positions(self) -> int | None:
        return config_int(self.values, POSITIONS)

    @property
    def has_attention(self) -> bool:
        return self.heads is not None and self.layers is not None

    def describe(self) -> str:
        """The model as a message names it: `name (model_type)`."""
        return f"{self.name} ({self.values.get('model_type', 'unknown type')})"

    def projection_modules(self) -> list[str]:
        """Modules with a 2-D weight outside the embeddings: the Linear and Conv1D layers LoRA and delta
        tuning wrap (a LayerNorm's weight is 1-D), as named in the base model's files."""
        return [
            name.removesuffix(".weight")
            for name, shape in self.tensors.items()
            if len(shape) == 2 and name.endswith(".weight") and not is_embedding(name)
        ]


@dataclass(frozen=True)
class ModelShapes:
    """A base model's tensor shapes (from its safetensors headers) and config, for an estimate."""

    tensors: Shapes
    config: Mapping[str, Any]

    @property
    def hidden(self) -> int:
        return self.dimension("hidden_size", "n_embd", "d_model")

    @property
    def layers(self) -> int:
        return self.dimension("num_hidden_layers", "n_layer")

    def dimension(self, *names: str) -> int:
        """The first of `names` the config sets to an integer; 0 when it sets none."""
        return next((int(self.config[name]) for name in names if isinstance(self.config.get(name), int)), 0)

    def total(self) -> int:
        return size(self.tensors.values())

    def matching(self, patterns: Sequence[str]) -> int:
        """Size of the tensors of the modules whose names match one of the glob `patterns`."""
        return size(
            shape
            for name, shape in self.tensors.items()
            if any(fnmatch.fnmatch(name.rsplit(".", 1)[0], pattern) for pattern in patterns)
        )

    def lowest_matching(self, patterns: Sequence[str]) -> int:
        """The lowest layer holding a tensor of a module matching `patterns` (0 for the embeddings, the
        layer count for what follows the stack)."""
        lowest = self.layers
        for name in self.tensors:
            if any(fnmatch.fnmatch(name.rsplit(".", 1)[0], pattern) for pattern in patterns):
                layer = LAYER_INDEX.search(name)
                lowest = min(lowest, int(layer.group(1)) if layer else (0 if is_embedding(name) else lowest))
        return lowest

    def layer_weights(self) -> int:
        """Size of the 2-D weights inside the transformer layers: what every token multiplies."""
        return size(
            shape for name, shape in self.tensors.items() if len(shape) == 2 and LAYER_INDEX.search(name)
        )

    def biases(self) -> int:
        return size(shape for name, shape in self.tensors.items() if name.endswith(".bias"))

    def linear_weights(self, targets: Sequence[str] | None) -> Iterator[tuple[str, tuple[int, ...]]]:
        """(module, shape) of the 2-D weights `targets` names (exact or suffix); None: all but embeddings."""
        for name, shape in self.tensors.items():
            if len(shape) != 2 or not name.endswith(".weight"):
                continue
            module = name.removesuffix(".weight")
            if targets is None:
                if not is_embedding(module):
                    yield module, shape
            elif any(module == target or module.endswith("." + target) for target in targets):
                yield module, shape

    def last_layers(self, *, first: int) -> int:
        """Size of layers `first`… and of the modules after the stack (BERT's pooler, GPT-2's ln_f)."""
        total = 0
        for name, shape in self.tensors.items():
            layer = LAYER_INDEX.search(name)
            after_stack = layer is None and not is_embedding(name)
            if after_stack or (layer is not None and int(layer.group(1)) >= first):
                total += math.prod(shape)
        return total

    def bottleneck(self, reduction_factor: int | None, bottleneck_size: int | None) -> int:
        """Parameters of one bottleneck (down, up and their biases) on the model's hidden width."""
        width = bottleneck_size or self.hidden // (reduction_factor or 1)
        return 2 * self.hidden * width + width + self.hidden


def size(shapes: Iterable[tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes)


def is_embedding(name: str) -> bool:
    return any(part in name for part in ("embed", "wte", "wpe"))
