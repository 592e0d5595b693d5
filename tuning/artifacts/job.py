"""What an artifact writer is given (`TrainedJob`) and returns (`Written`), and what a layout is."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn
from transformers import PreTrainedTokenizerBase

from tuning.data import Label
from tuning.methods.apply import Applied
from tuning.pretrained import PretrainedSnapshot
from tuning.spec import JobSpec


@dataclass
class TrainedJob:
    """Everything a writer may need about a finished job; the model is on the CPU, in eval mode."""

    spec: JobSpec
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    head_modules: Sequence[str]
    labels: Sequence[Label]
    base_model_path: Path
    metrics: Mapping[str, float]
    applied: Applied
    snapshot: PretrainedSnapshot  # θ₀ of the pretrained tensors the job trained directly
    pretrained: frozenset[str]  # names of every tensor loaded from the checkpoint
    tokenizer_changed: bool = False  # the method added tokens: the tokenizer travels with the artifact


@dataclass
class Written:
    files: list[str]  # paths relative to the artifact folder
    manifest: dict[str, Any] = field(default_factory=dict)  # entries a writer adds to the manifest


class ArtifactWriter(Protocol):
    def write(self, out_dir: Path, job: TrainedJob) -> Written: ...


class ArtifactLayout(ArtifactWriter, Protocol):
    """A layout writes a job's trained tensors and loads them back into a model built from its spec."""

    def load(self, model: nn.Module, artifact_dir: Path) -> None: ...
