"""Loading an artifact back: the one documented tuning call that turns a downloaded delta into a model.

The base model is rebuilt from the manifest's id, deltatune's own LoRA layers are applied as the
spec says, and the adapter file's tensors (PEFT's names) are loaded into them and into the head.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from tuning.batching import batches_in_order, encode
from tuning.classifier import load_classifier
from tuning.data import Label
from tuning.device import pick_device
from tuning.errors import SpecError
from tuning.evaluate import classifier_logits
from tuning.export import ADAPTER_WEIGHTS, MANIFEST, PEFT_PREFIX, weights_sha256
from tuning.lora import apply_lora
from tuning.models import resolve_base_model
from tuning.spec import JobSpec

logger = logging.getLogger(__name__)


@dataclass
class LoadedArtifact:
    model: nn.Module  # in eval mode, on `device`
    tokenizer: PreTrainedTokenizerBase
    labels: list[Label]  # index → label
    manifest: dict[str, Any]
    max_length: int
    device: torch.device


def load_artifact(
    artifact_dir: str | Path, model_dirs: Sequence[Path] = (), *, device: torch.device | None = None
) -> LoadedArtifact:
    """Rebuild the fine-tuned classifier an artifact describes (base model found via `model_dirs`)."""
    artifact_dir = Path(artifact_dir)
    manifest = json.loads((artifact_dir / MANIFEST).read_text())
    spec = JobSpec.model_validate(manifest["spec"])
    labels = [manifest["labels"][str(index)] for index in range(len(manifest["labels"]))]
    base_path = resolve_base_model(spec.base_model, model_dirs)
    _warn_if_base_changed(base_path, manifest["base_model"].get("weights_sha256", {}))
    classifier = load_classifier(base_path, labels, max_seq_length=spec.hyperparameters.max_seq_length)
    model: nn.Module = classifier.model  # typed as a plain module: transformers' .to() stubs are odd
    apply_lora(model, spec.method, exclude=classifier.head_modules)
    _load_adapter_tensors(model, load_file(artifact_dir / ADAPTER_WEIGHTS))
    device = device or pick_device()
    model.to(device).eval()
    return LoadedArtifact(model, classifier.tokenizer, labels, manifest, classifier.max_length, device)


@torch.no_grad()
def predict_logits(loaded: LoadedArtifact, texts: Sequence[str], *, batch_size: int = 32) -> torch.Tensor:
    """Float32 logits on the CPU, one row per text, columns in `loaded.labels` order."""
    encoded = encode(loaded.tokenizer, texts, None, max_length=loaded.max_length)
    batches = batches_in_order(encoded, batch_size)
    rows = [classifier_logits(loaded.model, batch, loaded.device).cpu() for batch in batches]
    return torch.cat(rows)


def _load_adapter_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy PEFT-named tensors into the model; every trainable tensor must be covered, nothing extra."""
    own = {PEFT_PREFIX + name: tensor for name, tensor in model.state_dict().items()}
    unknown = sorted(set(tensors) - set(own))
    expected = {PEFT_PREFIX + name for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(expected - set(tensors))
    if unknown or missing:  # a different base, or a spec edited after training
        raise SpecError(f"adapter does not fit its base model: extra {unknown[:5]}, missing {missing[:5]}")
    with torch.no_grad():
        for key, tensor in tensors.items():
            own[key].copy_(tensor)


def _warn_if_base_changed(base_path: Path, recorded: dict[str, str]) -> None:
    if recorded and weights_sha256(base_path) != recorded:
        logger.warning("base model at %s differs from the one this artifact was trained on", base_path)
