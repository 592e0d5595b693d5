"""Checks of a spec against its base model's config, before anything loads: the API runs them at
`POST /v1/jobs` (a 422 naming the field), and `tuning.run` runs them again.

Reads only `config.json`, so it needs no torch. A config that does not state a size (an unknown
architecture, a renamed key) passes: the worker, which sees the real modules, has the last word.
What only the modules can tell (which Linear layers a pattern matches, where an architecture's
adapter projections sit) is left to the worker rather than guessed from `model_type`.
"""

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tuning.errors import SpecError
from tuning.spec import JobSpec
from tuning.spec.methods import LoraMethod, PartialMethod

# Config keys for the same quantity across the families transformers uses (BERT, GPT-2, DistilBERT, T5).
_HEADS = ("num_attention_heads", "n_head", "n_heads", "num_heads")
_LAYERS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
_POSITIONS = ("max_position_embeddings", "n_positions")

Config = dict[str, Any]


def read_config(model_path: Path) -> Config:
    try:
        config = json.loads((model_path / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise SpecError(f"the base model has no readable config.json: {error}", param="base_model") from None
    if not isinstance(config, dict):
        raise SpecError("the base model's config.json is not a JSON object", param="base_model")
    return config


def check_spec_for_model(spec: JobSpec, model_path: Path) -> None:
    """Raise SpecError when the spec asks for something this model cannot do."""
    config = read_config(model_path)
    for check in CHECKS:
        check(spec, config)


def has_attention(config: Config) -> bool:
    return config_int(config, _HEADS) is not None and config_int(config, _LAYERS) is not None


def config_int(config: Config, keys: Sequence[str]) -> int | None:
    """The first of `keys` the config sets to a positive integer (a bool is not a size)."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _model(spec: JobSpec, config: Config) -> str:
    return f"{spec.base_model} ({config.get('model_type', 'unknown type')})"


def _prefix_needs_attention(spec: JobSpec, config: Config) -> None:
    if spec.method.type == "prefix_tuning" and not has_attention(config):
        raise SpecError(
            f"prefix_tuning adds key/value prefixes to attention layers, but {_model(spec, config)} "
            "has no attention heads in its config",
            param="method.type",
        )


def _prompt_leaves_room(spec: JobSpec, config: Config) -> None:
    # Virtual tokens take positions of their own: with all of them taken, no text reaches the model.
    limit = config_int(config, _POSITIONS)
    virtual = getattr(spec.method, "num_virtual_tokens", 0)
    if limit is not None and spec.method.type == "prompt_tuning" and virtual >= limit:
        raise SpecError(
            f"num_virtual_tokens {virtual} leaves no room for text in {spec.base_model}'s {limit} positions",
            param="method.num_virtual_tokens",
        )


def _last_layers_exist(spec: JobSpec, config: Config) -> None:
    count, method = config_int(config, _LAYERS), spec.method
    if count is None or not isinstance(method, PartialMethod) or method.last_n_layers is None:
        return
    if method.last_n_layers > count:
        raise SpecError(
            f"last_n_layers is {method.last_n_layers}, but {_model(spec, config)} has "
            f"{count} transformer layers",
            param="method.last_n_layers",
        )


def _lora_layers_exist(spec: JobSpec, config: Config) -> None:
    count, method = config_int(config, _LAYERS), spec.method
    if count is None or not isinstance(method, LoraMethod) or method.layers_to_transform is None:
        return
    missing = sorted(index for index in set(method.layers_to_transform) if index >= count)
    if missing:
        raise SpecError(
            f"layers_to_transform names layers {missing}, but {_model(spec, config)} has {count} "
            f"transformer layers, numbered 0 to {count - 1}",
            param="method.layers_to_transform",
        )


CHECKS: tuple[Callable[[JobSpec, Config], None], ...] = (
    _prefix_needs_attention,
    _prompt_leaves_room,
    _last_layers_exist,
    _lora_layers_exist,
)
