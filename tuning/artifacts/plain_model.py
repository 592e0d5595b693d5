"""A finished job's model as a plain transformers model, so a later job can use it as its base model.

The artifact is rebuilt exactly as `tuning.load_artifact` does (base model, head, method, trained
tensors), then every mergeable wrapper is folded into its weight (LoRA's W + s·B·A, delta's W + Δw);
full, partial and BitFit leave plain layers already. The folder saved holds weights, config and
tokenizer, like any directory base model.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel

from tuning.artifacts.load import load_artifact
from tuning.artifacts.merged import merged_copy
from tuning.parts.pooling import write_pooling_files


def export_plain_model(artifact_dir: Path, out_dir: Path, model_dirs: Sequence[Path]) -> Path:
    """Save the merged model of the artifact in `artifact_dir` into `out_dir`; its base is found in
    `model_dirs` (a job model itself, for a chain of jobs)."""
    loaded = load_artifact(artifact_dir, model_dirs, device=torch.device("cpu"))
    model = merged_copy(loaded.model)
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"a job model must be a transformers model, not {type(model).__name__}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    loaded.tokenizer.save_pretrained(out_dir)
    # The manifest records a classifier's resolved pooling; older artifacts and other tasks read "first".
    write_pooling_files(out_dir, loaded.manifest.get("pooling", "first"), model.config.hidden_size)
    return out_dir
