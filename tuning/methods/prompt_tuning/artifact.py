"""A prompt-tuning job's artifact in PEFT's layout, and what prefix tuning's writer shares with it.

- `adapter_config.json`: PEFT's prompt-learning fields only. `prompt_tuning_init` is always RANDOM:
  the trained embeddings replace any init, and TEXT would make PEFT load a tokenizer from
  `tokenizer_name_or_path` (a path on the training machine) when the adapter is reloaded for
  training. The init the job used is in the manifest's spec.
- `adapter_model.safetensors`: `prompt_embeddings` (n, token_dim), and the trained head under the
  names PEFT gives `modules_to_save` in a prompt-learning model: `base_model.<head>.<tensor>` (the
  PEFT model's `base_model` is the HF model itself here, not a tuner wrapping it as for LoRA).
"""

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tuning.artifacts import TrainedJob, Written
from tuning.artifacts.manifest import write_json
from tuning.artifacts.peft_lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    cpu_tensors,
    head_state_dict,
    load_peft_tensors,
    peft_task_fields,
)
from tuning.errors import SpecError
from tuning.methods.prompt_tuning import ENCODER, prompt_encoder

PROMPT_LEARNING_PREFIX = "base_model."
PROMPT_EMBEDDINGS = "prompt_embeddings"


def write(out_dir: Path, job: TrainedJob) -> Written:
    encoder = prompt_encoder(job.model)
    config = prompt_learning_config(job, "PROMPT_TUNING", encoder.embedding.embedding_dim)
    config["prompt_tuning_init"] = "RANDOM"
    write_prompt_learning(out_dir, job, encoder.embedding.weight, config)
    return Written([ADAPTER_WEIGHTS, ADAPTER_CONFIG])


def load(model: nn.Module, artifact_dir: Path) -> None:
    """Load the adapter file into a model the prompt-tuning method was applied to with the job's spec."""
    prompt_encoder(model)  # a clear error when the spec and the artifact disagree
    load_prompt_learning(model, artifact_dir, f"{ENCODER}.embedding.weight")


def prompt_learning_config(job: TrainedJob, peft_type: str, token_dim: int) -> dict[str, Any]:
    """The fields every PEFT prompt-learning config needs; the methods add their own."""
    config = getattr(job.model, "config", None)
    method = job.spec.method
    assert method.type in ("prompt_tuning", "prefix_tuning")
    return {
        "peft_type": peft_type,
        **peft_task_fields(job.spec, job.head_modules),
        "base_model_name_or_path": job.spec.base_model,
        "num_virtual_tokens": method.num_virtual_tokens,
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
