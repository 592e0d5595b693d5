"""Loading an artifact back: the one documented tuning call that turns a downloaded delta into a model.

    loaded = tuning.load_artifact("artifact-folder", model_dirs=[...])
    logits = tuning.predict_logits(loaded, ["some text"])

Works for every layout: the model is rebuilt from the manifest's spec exactly as training built it
(base model, head, method), then the layout's reader fills in the trained tensors.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from tuning.artifacts import artifact_layout
from tuning.artifacts.manifest import read_manifest, weights_sha256
from tuning.batching import batches_in_order, encode
from tuning.build import apply_spec_method
from tuning.data import Label
from tuning.device import pick_device
from tuning.errors import SpecError
from tuning.evaluate import classifier_logits
from tuning.models import resolve_base_model
from tuning.spec import JobSpec
from tuning.tasks import task_named

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
    """Rebuild the fine-tuned model an artifact describes (base model found via `model_dirs`)."""
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    spec = recorded_pooling(JobSpec.model_validate(manifest["spec"]))
    labels = [manifest["labels"][str(index)] for index in range(len(manifest["labels"]))]
    base_path = resolve_base_model(spec.base_model, model_dirs)
    _warn_if_base_changed(base_path, manifest["base_model"].get("weights_sha256", {}))
    task_model = task_named(spec.metrics_kind).load(spec, base_path, labels)
    apply_spec_method(spec, task_model)
    model: nn.Module = task_model.model  # typed as a plain module: transformers' .to() stubs are odd
    artifact_layout(spec.method.type, manifest["layout"]).load(model, artifact_dir)
    device = device or pick_device()
    model.to(device).eval()
    return LoadedArtifact(model, task_model.tokenizer, labels, manifest, task_model.max_length, device)


def recorded_pooling(spec: JobSpec) -> JobSpec:
    """A manifest's spec carries the pooling its job resolved; "auto" there is from an artifact made
    before head.pooling existed, when every classifier read the model class's first token."""
    if spec.task != "sequence_classification" or spec.head.pooling != "auto":
        return spec
    return spec.model_copy(update={"head": spec.head.model_copy(update={"pooling": "first"})})


@torch.no_grad()
def predict_logits(loaded: LoadedArtifact, texts: Sequence[str], *, batch_size: int = 32) -> torch.Tensor:
    """Float32 logits on the CPU, one row per text, columns in `loaded.labels` order.

    Classification only: a causal LM's logits are one row per token; call `loaded.model` directly.
    """
    if loaded.manifest.get("task") == "causal_lm":
        raise SpecError(
            "predict_logits scores classifiers; for a causal_lm artifact call loaded.model on token ids",
            param="task",
        )
    encoded = encode(loaded.tokenizer, texts, None, max_length=loaded.max_length)
    batches = batches_in_order(encoded, batch_size)
    rows = [classifier_logits(loaded.model, batch, loaded.device).cpu() for batch in batches]
    return torch.cat(rows)


def _warn_if_base_changed(base_path: Path, recorded: dict[str, str]) -> None:
    if recorded and weights_sha256(base_path) != recorded:
        logger.warning("base model at %s differs from the one this artifact was trained on", base_path)
