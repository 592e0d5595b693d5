"""Writing a trained LoRA job's artifact: PEFT's adapter layout plus deltatune's own manifest.

- `adapter_config.json`: only the fields PEFT needs; extra fields break older PEFT releases (#1979).
- `adapter_model.safetensors`: PEFT's key names, adapter name stripped and `base_model.model.` kept
  (`base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight`), and the trained head
  saved the way PEFT saves `modules_to_save` (`base_model.model.classifier.weight`), so a reload
  brings the trained head back instead of a random one (PEFT #577, #876).
- `deltatune.json`: the manifest: spec, label map, base model and its weights' sha256, metrics,
  library versions.
"""

import hashlib
import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from tuning.data import Label
from tuning.lora import lora_layers, matches_target
from tuning.spec import JobSpec

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MANIFEST = "deltatune.json"
MANIFEST_FORMAT_VERSION = 1
PEFT_PREFIX = "base_model.model."
WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.bin")


def write_lora_artifact(
    out_dir: Path,
    *,
    spec: JobSpec,
    model: nn.Module,
    head_modules: Sequence[str],
    labels: Sequence[Label],
    base_model_path: Path,
    metrics: Mapping[str, float],
) -> list[str]:
    """Write the three artifact files into `out_dir`; return their names. Call only after training."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state_dict(model, head_modules), out_dir / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    _write_json(out_dir / ADAPTER_CONFIG, adapter_config(spec, model, head_modules))
    # The manifest goes last: a folder holding it holds everything it describes.
    _write_json(out_dir / MANIFEST, manifest(spec, labels, base_model_path, metrics))
    return [ADAPTER_WEIGHTS, ADAPTER_CONFIG, MANIFEST]


def adapter_state_dict(model: nn.Module, head_modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """LoRA A/B of every wrapped layer and the full state of every head module, under PEFT's names."""
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model).items():
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight
    for head in head_modules:
        for key, tensor in model.get_submodule(head).state_dict().items():
            tensors[f"{PEFT_PREFIX}{head}.{key}"] = tensor
    # safetensors wants contiguous CPU tensors that share no storage.
    return {key: tensor.detach().to("cpu", copy=True).contiguous() for key, tensor in tensors.items()}


def adapter_config(spec: JobSpec, model: nn.Module, head_modules: Sequence[str]) -> dict[str, Any]:
    method = spec.method
    alpha = int(method.alpha) if float(method.alpha).is_integer() else method.alpha
    return {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "base_model_name_or_path": spec.base_model,
        "r": method.r,
        "lora_alpha": alpha,
        "lora_dropout": method.dropout,
        "target_modules": peft_target_modules(model, method.target_modules),
        "modules_to_save": list(head_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
    }


def peft_target_modules(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """The spec's targets when PEFT would wrap exactly the layers we wrapped, else their full names.

    Our matching skips non-Linear modules and the head; PEFT's would try to wrap them (and fail, or
    wrap something extra), so in that case the exact names keep the reload identical.
    """
    adapted = set(lora_layers(model))
    inside_lora = tuple(f"{name}." for name in adapted)
    names = {name for name, _ in model.named_modules() if name and not name.startswith(inside_lora)}
    peft_would_wrap = {name for name in names if any(matches_target(name, t) for t in targets)}
    return list(targets) if peft_would_wrap == adapted else sorted(adapted)


def manifest(
    spec: JobSpec, labels: Sequence[Label], base_model_path: Path, metrics: Mapping[str, float]
) -> dict[str, Any]:
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "layout": "peft",
        "task": spec.task,
        "spec": spec.model_dump(mode="json"),
        "labels": {str(index): label for index, label in enumerate(labels)},
        "base_model": {"id": spec.base_model, "weights_sha256": weights_sha256(base_model_path)},
        "metrics": dict(metrics),
        "versions": {name: _version(name) for name in ("deltatune", "torch", "transformers", "peft")},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def weights_sha256(model_dir: Path) -> dict[str, str]:
    """sha256 of each weights file of the base model, so a reload can tell if the base changed."""
    files = sorted({path for pattern in WEIGHT_FILE_PATTERNS for path in model_dir.glob(pattern)})
    return {path.name: _sha256(path) for path in files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None  # e.g. deltatune run from a source tree that was never installed


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
