"""Writing a trained job's artifact, in the layout its method calls for.

- PEFT's layout for the methods PEFT also implements (LoRA, prompt tuning, prefix tuning) with a
  linear head: `adapter_config.json` + `adapter_model.safetensors`, loadable with
  `peft.PeftModel.from_pretrained`. One module per method: `tuning/artifacts/peft_<method>.py`.
- deltatune's layout for everything else (`deltatune_layout.py`): one safetensors of only the tensors
  the job changed (as θ−θ₀) or added (as values).
- Optional extras in sub-folders: `merged/` (a full `save_pretrained` model) and, for delta jobs,
  `lora/` (Δw compressed to LoRA by truncated SVD, in PEFT's layout).
- `deltatune.json` last: a folder holding the manifest holds everything it describes.
"""

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn
from transformers import PreTrainedTokenizerBase

from tuning.artifacts.manifest import MANIFEST, Layout, manifest, write_json
from tuning.data import Label
from tuning.methods import Applied
from tuning.pretrained import PretrainedSnapshot
from tuning.spec import JobSpec

TOKENIZER_DIR = "tokenizer"


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


class LayoutWriter(Protocol):
    def write(self, out_dir: Path, job: TrainedJob) -> Written: ...


def write_artifact(out_dir: Path, job: TrainedJob) -> list[str]:
    """Write the whole artifact into `out_dir`; return the relative paths of its files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    layout: Layout = "peft" if job.spec.peft_layout else "deltatune"
    writer = f"peft_{job.spec.method.type}" if layout == "peft" else "deltatune_layout"
    parts = [_writer(writer).write(out_dir, job)]
    if job.tokenizer_changed:
        job.tokenizer.save_pretrained(out_dir / TOKENIZER_DIR)
        parts.append(Written(sorted(_relative_files(out_dir / TOKENIZER_DIR, out_dir))))
    if job.spec.export.merged:
        parts.append(_writer("merged").write(out_dir / "merged", job))
    if job.spec.export.compress_to_lora:
        parts.append(_writer("compress").write(out_dir / "lora", job))
    files = [name for part in parts for name in part.files]
    extra = {key: value for part in parts for key, value in part.manifest.items()}
    write_json(
        out_dir / MANIFEST,
        manifest(
            job.spec,
            layout=layout,
            labels=job.labels,
            base_model_path=job.base_model_path,
            metrics=job.metrics,
            files=files + [MANIFEST],
            extra=extra,
        ),
    )
    return files + [MANIFEST]


def _writer(name: str) -> LayoutWriter:
    return importlib.import_module(f"tuning.artifacts.{name}")  # type: ignore[return-value]


def _relative_files(folder: Path, root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in folder.rglob("*") if path.is_file()]
