"""A prompt-tuning job's artifact in PEFT's layout (what it shares with prefix tuning's is in
tuning/artifacts/peft_prompt_learning.py).

`prompt_tuning_init` is always RANDOM: the trained embeddings replace any init, and TEXT would make
PEFT load a tokenizer from `tokenizer_name_or_path` (a path on the training machine) when the adapter
is reloaded for training. The init the job used is in the manifest's spec.
"""

from pathlib import Path

from torch import nn

from tuning.artifacts.job import TrainedJob, Written
from tuning.artifacts.peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from tuning.artifacts.peft_prompt_learning import (
    load_prompt_learning,
    prompt_learning_config,
    write_prompt_learning,
)
from tuning.methods.prompt_tuning.model import ENCODER, prompt_encoder
from tuning.methods.prompt_tuning.options import PromptTuningMethod


def write(out_dir: Path, job: TrainedJob) -> Written:
    encoder, options = prompt_encoder(job.model), job.spec.method
    assert isinstance(options, PromptTuningMethod)
    config = prompt_learning_config(
        job,
        "PROMPT_TUNING",
        num_virtual_tokens=options.num_virtual_tokens,
        token_dim=encoder.embedding.embedding_dim,
    )
    config["prompt_tuning_init"] = "RANDOM"
    write_prompt_learning(out_dir, job, encoder.embedding.weight, config)
    return Written([ADAPTER_WEIGHTS, ADAPTER_CONFIG])


def load(model: nn.Module, artifact_dir: Path) -> None:
    """Load the adapter file into a model the prompt-tuning method was applied to with the job's spec."""
    prompt_encoder(model)  # a clear error when the spec and the artifact disagree
    load_prompt_learning(model, artifact_dir, f"{ENCODER}.embedding.weight")
