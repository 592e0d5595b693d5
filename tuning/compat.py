"""Checks of a spec against its base model's config, before anything loads: the API runs them at
`POST /v1/jobs` (a 422 naming the field), and `tuning.run` runs them again.

Reads only `config.json`, so it needs no torch.
"""

import json
from pathlib import Path
from typing import Any

from tuning.errors import SpecError
from tuning.spec import JobSpec

# Config keys for the attention geometry, across the families transformers uses.
_HEADS = ("num_attention_heads", "n_head", "num_heads")
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers")


def read_config(model_path: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((model_path / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise SpecError(f"the base model has no readable config.json: {error}", param="base_model") from None
    return config


def check_spec_for_model(spec: JobSpec, model_path: Path) -> None:
    """Raise SpecError when the spec asks for something this model cannot do."""
    config = read_config(model_path)
    if spec.method.type == "prefix_tuning" and not has_attention(config):
        raise SpecError(
            f"prefix_tuning adds key/value prefixes to attention layers, but {spec.base_model} "
            f"({config.get('model_type', 'unknown type')}) has no attention heads in its config",
            param="method.type",
        )
    limit = config.get("max_position_embeddings") or config.get("n_positions")
    virtual = getattr(spec.method, "num_virtual_tokens", 0)
    if isinstance(limit, int) and spec.method.type == "prompt_tuning" and virtual >= limit:
        raise SpecError(
            f"num_virtual_tokens {virtual} leaves no room for text in {spec.base_model}'s {limit} positions",
            param="method.num_virtual_tokens",
        )


def has_attention(config: dict[str, Any]) -> bool:
    return any(isinstance(config.get(key), int) for key in _HEADS) and any(
        isinstance(config.get(key), int) for key in _LAYERS
    )
