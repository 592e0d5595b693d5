"""Checks of a spec against its base model's config, before anything loads: the API runs them at
`POST /v1/jobs` (a 422 naming the field), and `tuning.run` runs them again.

Reads only `config.json`, so it needs no torch. A config that does not state a size (an unknown
architecture, a renamed key) passes: the worker, which sees the real modules, has the last word.
The safetensors headers add the tensor names (which layers `target_modules` can match); what only
the modules can tell (where an architecture's adapter projections sit) is left to the worker rather
than guessed from `model_type`.
"""

import json
import struct
from pathlib import Path
from typing import Any

from tuning.errors import SpecError
from tuning.methods import method_entry
from tuning.methods.base_model import ModelConfig, Shapes
from tuning.models import tensor_shapes
from tuning.spec import JobSpec

Config = dict[str, Any]

# Model types whose transformers classes cannot checkpoint gradients (supports_gradient_checkpointing is
# False for their sequence-classification or causal-LM class; tests/tuning/test_memory.py checks this
# list against the installed transformers).
NO_GRADIENT_CHECKPOINTING = frozenset(
    {"albert", "cpmant", "ctrl", "flaubert", "funnel", "gpt_neox_japanese", "ibert", "jetmoe", "layoutlmv2"}
    | {
        "layoutlmv3",
        "markuplm",
        "mpnet",
        "openai-gpt",
        "perceiver",
        "reformer",
        "squeezebert",
        "xlm",
        "xlnet",
    }
)


def read_config(model_path: Path) -> Config:
    try:
        config = json.loads((model_path / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise SpecError(f"the base model has no readable config.json: {error}", param="base_model") from None
    if not isinstance(config, dict):
        raise SpecError("the base model's config.json is not a JSON object", param="base_model")
    return config


def check_spec_for_model(spec: JobSpec, model_path: Path) -> None:
    """Raise SpecError when the spec asks for something this model cannot do: each of its method's
    registered rules (tuning/methods/<type>/__init__.py) on the model's config."""
    config = ModelConfig(spec.base_model, read_config(model_path), _tensors(model_path))
    for rule in method_entry(spec.method.type).compat:
        rule(spec.method, config)
    if (
        spec.hyperparameters.gradient_checkpointing
        and config.values.get("model_type") in NO_GRADIENT_CHECKPOINTING
    ):
        raise SpecError(
            f"{config.describe()} does not support gradient checkpointing in transformers",
            param="hyperparameters.gradient_checkpointing",
        )


def _tensors(model_path: Path) -> Shapes:
    try:
        return tensor_shapes(model_path)
    except (OSError, ValueError, KeyError, struct.error):
        # An unreadable header leaves the names unknown: the rules that need them pass, the worker decides.
        return {}
