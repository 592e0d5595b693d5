"""What a job would cost, estimated before it runs from the validation report and the base model's files.

Imports no torch: the API answers a dry run with it. How each figure is made (also returned as text):

- steps = epochs × ceil(sequences / batch_size); sequences are the training examples, or with packing
  ceil(Σ tokens / max_seq_length). Early stopping can only make it fewer.
- tokens = Σ min(tokens, max_seq_length) over the training file × epochs (packing cuts nothing: Σ
  tokens; without a tokenizer.json, max_seq_length per example: an upper bound).
- parameters P: the sum of the tensor shapes in the base model's safetensors headers; trainable T from
  the method (full: all; LoRA r·(in+out) per targeted weight; BitFit the biases; adapters, prompts and
  prefixes from their sizes; partial last_n_layers its share of the layers).
- seconds = (4·P + 2·T) × tokens / worker FLOP/s (forward 2·P, backward 2·P for activations and 2·T
  for weight gradients: 6·P for full fine-tuning) + evaluations × 2·P × validation tokens / FLOP/s.
- peak memory bytes = 4·P (float32 weights) + 12·T (gradient and AdamW's two moments) + activations
  2 × layers × seq × batch × hidden × (34 + 5·heads·seq/hidden) (Korthikanti et al. 2022, arXiv:2205.05198,
  per layer for 16-bit activations; doubled for float32), seq = the longest trained example.
"""

import fnmatch
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuning.models import tensor_shapes
from tuning.spec import JobSpec

# "encoder.layer.3.", "h.3.", "layers.3.": the index of a transformer layer in a tensor's name.
LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")
METHOD_TEXT = " ".join(
    line.strip() for line in (__doc__ or "").split("How each figure is made", 1)[1].splitlines()[1:]
)


@dataclass(frozen=True)
class Estimate:
    steps: int
    tokens: int
    parameters: int
    trainable_parameters: int
    seconds: float
    peak_memory_bytes: int
    method: str = METHOD_TEXT


def count_parameters(model_dir: Path) -> int:
    """The base model's parameter count, without loading it: the sum of its tensors' sizes."""
    return sum(math.prod(shape) for shape in tensor_shapes(model_dir).values())


def estimate_job(
    spec: JobSpec, base_path: Path, report: Mapping[str, Any], *, flops_per_second: float
) -> Estimate:
    """The dry run's figures for `spec` on the files `report` (tuning.validation) describes."""
    hp = spec.hyperparameters
    training = report["files"]["training_file"]
    trained_tokens = training.get("trained_tokens", training["examples"] * hp.max_seq_length)
    sequences = training["examples"]
    if spec.data.packing:
        sequences = training.get("packed_sequences", math.ceil(trained_tokens / hp.max_seq_length))
    steps = hp.epochs * math.ceil(sequences / hp.batch_size)
    tokens = trained_tokens * hp.epochs
    shapes = tensor_shapes(base_path)
    config = _config(base_path)
    parameters = sum(math.prod(shape) for shape in shapes.values())
    trainable = min(trainable_parameters(spec, shapes, config), parameters)
    seconds = (4 * parameters + 2 * trainable) * tokens / flops_per_second
    validation = report["files"].get("validation_file")
    if validation is not None:
        evaluations = 1 + (hp.epochs if hp.eval_steps is None else steps // hp.eval_steps)
        val_tokens = validation.get("trained_tokens", validation["examples"] * hp.max_seq_length)
        seconds += evaluations * 2 * parameters * val_tokens / flops_per_second
    longest = (
        hp.max_seq_length
        if spec.data.packing
        else min(training.get("tokens", {}).get("max", hp.max_seq_length), hp.max_seq_length)
    )
    memory = (
        4 * parameters + 12 * trainable + _activation_bytes(config, batch=hp.batch_size, seq=int(longest))
    )
    return Estimate(steps, tokens, parameters, trainable, seconds, memory)


def trainable_parameters(
    spec: JobSpec, shapes: Mapping[str, tuple[int, ...]], config: Mapping[str, Any]
) -> int:
    """How many parameters the method trains (the small classification head aside)."""
    method = spec.method
    hidden, layers = (
        _dim(config, "hidden_size", "n_embd", "d_model"),
        _dim(config, "num_hidden_layers", "n_layer"),
    )
    options = method.model_dump()
    if method.type == "lora":
        ranks = options["rank_pattern"]
        return sum(
            _rank(module, ranks, options["r"]) * (shape[0] + shape[1])
            for module, shape in _weights(shapes, options["target_modules"])
        )
    if method.type == "delta":
        return sum(math.prod(shape) for _, shape in _weights(shapes, options["target_modules"]))
    if method.type == "bitfit":
        return sum(math.prod(shape) for name, shape in shapes.items() if name.endswith(".bias"))
    if method.type in ("adapter", "input_adapter"):
        bottleneck = options["bottleneck_size"] or hidden // (options["reduction_factor"] or 1)
        per_adapter = 2 * hidden * bottleneck + bottleneck + hidden
        if method.type == "input_adapter":
            return per_adapter
        return layers * per_adapter * (2 if options["placement"] == "houlsby" else 1)
    if method.type == "prompt_tuning":
        return options["num_virtual_tokens"] * hidden
    if method.type == "prefix_tuning":
        prefixes = options["num_virtual_tokens"] * 2 * hidden * layers
        width = options["encoder_hidden_size"] or hidden
        return prefixes + (hidden * width + width * 2 * hidden * layers if options["projection"] else 0)
    if method.type == "partial":
        if options["head_only"]:
            return 0
        if options["last_n_layers"] is not None:
            return _last_layers_size(shapes, first=layers - options["last_n_layers"])
        return sum(
            math.prod(shape)
            for name, shape in shapes.items()
            if any(fnmatch.fnmatch(name.rsplit(".", 1)[0], pattern) for pattern in options["modules"])
        )
    return sum(math.prod(shape) for shape in shapes.values())  # full, and any method not modelled here


def _weights(
    shapes: Mapping[str, tuple[int, ...]], targets: list[str] | None
) -> Iterator[tuple[str, tuple[int, ...]]]:
    """2-D weights of the linear layers `targets` names (exact or suffix); None: all but embeddings."""
    for name, shape in shapes.items():
        if len(shape) != 2 or not name.endswith(".weight"):
            continue
        module = name.removesuffix(".weight")
        if targets is None:
            if not _is_embedding(module):
                yield module, shape
        elif any(module == target or module.endswith("." + target) for target in targets):
            yield module, shape


def _last_layers_size(shapes: Mapping[str, tuple[int, ...]], *, first: int) -> int:
    """Tensors of layers `first`… and of the modules after the stack (BERT's pooler, GPT-2's ln_f)."""
    size = 0
    for name, shape in shapes.items():
        layer = LAYER_INDEX.search(name)
        after_stack = layer is None and not _is_embedding(name)
        if after_stack or (layer is not None and int(layer.group(1)) >= first):
            size += math.prod(shape)
    return size


def _is_embedding(name: str) -> bool:
    return any(part in name for part in ("embed", "wte", "wpe"))


def _rank(module: str, ranks: Mapping[str, int], default: int) -> int:
    return next((rank for key, rank in ranks.items() if module == key or module.endswith("." + key)), default)


def _activation_bytes(config: Mapping[str, Any], *, batch: int, seq: int) -> int:
    hidden = _dim(config, "hidden_size", "n_embd", "d_model")
    layers = _dim(config, "num_hidden_layers", "n_layer")
    heads = _dim(config, "num_attention_heads", "n_head")
    per_layer = seq * batch * hidden * (34 + 5 * heads * seq / max(hidden, 1))
    return int(2 * layers * per_layer)


def _dim(config: Mapping[str, Any], *names: str) -> int:
    return next((int(config[name]) for name in names if isinstance(config.get(name), int)), 0)


def _config(base_path: Path) -> dict[str, Any]:
    path = base_path / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}
