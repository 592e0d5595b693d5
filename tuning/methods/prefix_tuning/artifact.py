"""A prefix-tuning job's artifact in PEFT's layout.

PEFT stores the prefix as `prompt_embeddings` (n, layers·2·token_dim) with or without its MLP: the
MLP only reparameterises training. The artifact holds the prefix the MLP computes and says
`prefix_projection: false`, so PEFT loads it into a plain table and the MLP never ships. The head is
saved as for prompt tuning (`base_model.<head>.<tensor>`).

A classifier's prefix is written with `task_type` FEATURE_EXTRACTION, not SEQ_CLS: PEFT 0.21's
SEQ_CLS prefix forward looks for a `past_key_values` parameter on the model's forward, which
transformers 5 renamed `cache`, and refuses to run. Its FEATURE_EXTRACTION forward hands the prefix
to the same model as `past_key_values=`, which transformers 5 still maps to `cache` (with a
FutureWarning, until its 5.40), and returns the classifier's own output, logits included.
"""

from pathlib import Path

import torch
from torch import nn

from tuning.artifacts.job import TrainedJob, Written
from tuning.artifacts.peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from tuning.artifacts.peft_prompt_learning import (
    load_prompt_learning,
    prompt_learning_config,
    write_prompt_learning,
)
from tuning.methods.prefix_tuning.model import ENCODER, prefix_encoder
from tuning.methods.prefix_tuning.options import PrefixTuningMethod

PEFT_RUNNABLE_CLASSIFIER_TASK = "FEATURE_EXTRACTION"


def write(out_dir: Path, job: TrainedJob) -> Written:
    encoder = prefix_encoder(job.model)
    geometry = encoder.geometry
    options = job.spec.method
    assert isinstance(options, PrefixTuningMethod)
    config = prompt_learning_config(
        job, "PREFIX_TUNING", num_virtual_tokens=options.num_virtual_tokens, token_dim=geometry.token_dim
    )
    if config["task_type"] == "SEQ_CLS":
        config["task_type"] = PEFT_RUNNABLE_CLASSIFIER_TASK
    # Key/value heads, as PEFT counts them for grouped-query attention.
    config |= {"num_attention_heads": geometry.heads, "num_layers": geometry.layers}
    config |= {"encoder_hidden_size": geometry.token_dim, "prefix_projection": False}
    with torch.no_grad():
        prefix = encoder.prefix().detach()
    write_prompt_learning(out_dir, job, prefix, config)
    trained_with = (
        "an MLP reparameterisation (exported as the prefix it computes)" if encoder.transform else "a table"
    )
    return Written([ADAPTER_WEIGHTS, ADAPTER_CONFIG], {"prefix": {"trained_as": trained_with}})


def load(model: nn.Module, artifact_dir: Path) -> None:
    """Load the adapter into a model the prefix-tuning method was applied to with the job's spec.

    A spec with `projection` rebuilds the MLP; the artifact holds its output, so the encoder first
    becomes a plain table of that shape.
    """
    prefix_encoder(model).drop_projection()
    load_prompt_learning(model, artifact_dir, f"{ENCODER}.embedding.weight")
