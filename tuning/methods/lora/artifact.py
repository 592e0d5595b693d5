"""A LoRA job's artifact in PEFT's layout.

- `adapter_config.json`: only the fields PEFT needs; extra fields break older PEFT releases (#1979).
- `adapter_model.safetensors`: PEFT's key names, adapter name stripped and `base_model.model.` kept
  (`base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight`), and the trained head
  saved the way PEFT saves `modules_to_save` (`base_model.model.classifier.weight`), so a reload
  brings the trained head back instead of a random one (PEFT #577, #876).
"""

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tuning.artifacts.job import TrainedJob, Written
from tuning.artifacts.manifest import write_json
from tuning.artifacts.peft import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    PEFT_PREFIX,
    cpu_tensors,
    head_state_dict,
    load_peft_tensors,
    peft_task_fields,
)
from tuning.layers import find_layers
from tuning.methods.lora.model import lora_layers
from tuning.methods.lora.options import LoraMethod
from tuning.spec import JobSpec


def write(out_dir: Path, job: TrainedJob) -> Written:
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = adapter_state_dict(job.model, job.head_modules)
    save_file(tensors, out_dir / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    write_json(out_dir / ADAPTER_CONFIG, adapter_config(job.spec, job.model, job.head_modules))
    return Written([ADAPTER_WEIGHTS, ADAPTER_CONFIG])


def load(model: nn.Module, artifact_dir: Path) -> None:
    """Load the adapter file into a model the LoRA method was applied to with the job's spec."""
    load_peft_tensors(model, load_file(artifact_dir / ADAPTER_WEIGHTS))


def adapter_state_dict(model: nn.Module, head_modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """LoRA A/B of every wrapped layer and the full state of every head module, under PEFT's names."""
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model).items():
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight
    tensors.update(head_state_dict(model, head_modules, PEFT_PREFIX))
    return cpu_tensors(tensors)


def adapter_config(spec: JobSpec, model: nn.Module, head_modules: Sequence[str]) -> dict[str, Any]:
    """PEFT's config for the layers this job wrapped; options left at PEFT's defaults are not written."""
    method = spec.method
    assert isinstance(method, LoraMethod)
    layers = lora_layers(model)
    config: dict[str, Any] = {
        "peft_type": "LORA",
        **peft_task_fields(spec, head_modules),
        "base_model_name_or_path": spec.base_model,
        "r": method.r,
        "lora_alpha": json_number(method.alpha),
        "lora_dropout": method.dropout,
        "bias": "none",
        # PEFT would switch it on by itself for Conv1D, with a warning; saying so keeps the load quiet.
        "fan_in_fan_out": any(layer.fan_in_fan_out for layer in layers.values()),
        "inference_mode": True,
    }
    layers_pattern = None
    if method.layers_to_transform is not None:
        layers_pattern = find_layers(model, list(head_modules)).stack.rpartition(".")[2]
    config |= peft_targets(model, method.target_modules, method.layers_to_transform, layers_pattern)
    if method.use_rslora:
        config["use_rslora"] = True
    if method.rank_pattern:
        config["rank_pattern"] = dict(method.rank_pattern)
    return config


def json_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def peft_targets(
    model: nn.Module,
    targets: Sequence[str],
    layers_to_transform: Sequence[int] | None = None,
    layers_pattern: str | None = None,
) -> dict[str, Any]:
    """`target_modules` (with `layers_to_transform` and `layers_pattern`) that make PEFT wrap exactly the
    layers we wrapped: the spec's own when PEFT's matching agrees with ours, else the exact names.

    Our matching skips non-projection modules and the head; PEFT's would try to wrap them (and fail,
    or wrap something extra), so in that case the exact names keep the reload identical.
    """
    adapted = set(lora_layers(model))
    inside_lora = tuple(f"{name}." for name in adapted)
    names = {name for name, _ in model.named_modules() if name and not name.startswith(inside_lora)}
    peft_would_wrap = {
        name for name in names if peft_matches(name, targets, layers_to_transform, layers_pattern)
    }
    if peft_would_wrap != adapted:
        return {"target_modules": sorted(adapted)}
    if layers_to_transform is None:
        return {"target_modules": list(targets)}
    return {
        "target_modules": list(targets),
        "layers_to_transform": sorted(set(layers_to_transform)),
        "layers_pattern": layers_pattern,
    }


def peft_matches(
    name: str, targets: Sequence[str], layers: Sequence[int] | None, layers_pattern: str | None
) -> bool:
    """PEFT 0.21's rule for a list of targets: an exact name always matches; a dotted suffix matches
    when, with `layers_to_transform`, the index after the first `<layers_pattern>.` is listed."""
    if name in targets:
        return True
    if not any(name.endswith(f".{target}") for target in targets):
        return False
    if layers is None:
        return True
    # Lazy `.*?`: the first numbered segment is the layer index, not a later one.
    if layers_pattern:
        found = re.match(rf"(?:^|.*?\.){re.escape(layers_pattern)}\.(\d+)\.", name)
    else:
        found = re.match(r".*?\.[^.]*\.(\d+)\.", name)
    return found is not None and int(found.group(1)) in layers
