"""What prompt tuning's and prefix tuning's PEFT-layout artifacts share.

- `adapter_config.json`: PEFT's prompt-learning fields only; each method adds its own.
- `adapter_model.safetensors`: `prompt_embeddings` (n, token_dim), and the trained head under the
  names PEFT gives `modules_to_save` in a prompt-learning model: `base_model.<head>.<tensor>` (the
  PEFT model's `base_model` is the HF model itself here, not a tuner wrapping it as for LoRA).
"""

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tuning.artifacts.job import TrainedJob
from tuning.artifacts.manifest import write_json
from tuning.artifacts.peft import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    cpu_tensors,
    head_state_dict,
    load_peft_tensors,
    peft_task_fields,
)
from tuning.errors import SpecError

PROMPT_LEARNING_PREFIX = "base_model."
PROMPT_EMBEDDINGS = "prompt_embeddings"


def prompt_learning_config(
    job: TrainedJob, peft_type: str, *, num_virtual_tokens: int, token_dim: int
) -> dict[str, Any]:
    """The fields every PEFT prompt-learning config needs; the methods add their own."""
    config = getattr(job.model, "config", None)
    return {
        "peft_type": peft_type,
        **peft_task_fields(job.spec, job.head_modules),
        "base_model_name_or_path": job.spec.base_model,
        "num_virtual_tokens": num_virtual_tokens,
        "token_dim": token_dim,
        "num_transformer_submodules": 1,  # an encoder or a decoder, not both
        "num_attention_heads": getattr(config, "num_attention_heads", None),
        "num_layers": getattr(config, "num_hidden_layers", None),
        "inference_mode": True,
    }


def write_prompt_learning(
    out_dir: Path, job: TrainedJob, embeddings: torch.Tensor, config: dict[str, Any]
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {
        PROMPT_EMBEDDINGS: embeddings,
        **head_state_dict(job.model, job.head_modules, PROMPT_LEARNING_PREFIX),
    }
    save_file(cpu_tensors(tensors), out_dir / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    write_json(out_dir / ADAPTER_CONFIG, config)


def load_prompt_learning(model: nn.Module, artifact_dir: Path, embeddings_name: str) -> None:
    """`prompt_embeddings` into `embeddings_name`, the head into the head; nothing missing, nothing extra."""
    tensors = load_file(artifact_dir / ADAPTER_WEIGHTS)
    if PROMPT_EMBEDDINGS not in tensors:
        raise SpecError(f"{ADAPTER_WEIGHTS} holds no {PROMPT_EMBEDDINGS}: not a prompt-learning adapter")
    tensors[PROMPT_LEARNING_PREFIX + embeddings_name] = tensors.pop(PROMPT_EMBEDDINGS)
    load_peft_tensors(model, tensors, prefix=PROMPT_LEARNING_PREFIX)
