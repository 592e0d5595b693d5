"""A base model prepared for a task (`TaskModel`), and loading one as a sequence classifier.

A TaskModel is the model, its tokenizer, the modules trained in full (a classifier's new head; none
for a causal LM, whose head is the pretrained one) and which tensors count as pretrained.

The head is found generically rather than by name: every top-level child of the model other than
the backbone (`model.base_model_prefix`) that has parameters: `classifier` for BERT, `score` for
GPT-style models, `pre_classifier` + `classifier` for DistilBERT. Backbone modules whose weights the
checkpoint lacked (a missing pooler, say) are trained and saved too: they were initialised at
random, so without them a reload (ours or PEFT's) would not give the same outputs.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tuning.data import Label
from tuning.errors import SpecError

logger = logging.getLogger(__name__)


@dataclass
class TaskModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    # Modules trained in full and saved whole: PEFT's `modules_to_save`.
    head_modules: list[str]
    max_length: int
    # Tensors loaded from the checkpoint, outside the head: what "pretrained" means for θ₀ and deltas.
    pretrained: frozenset[str]


# transformers' config.problem_type for each of deltatune's classification problem types.
HF_PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}


def load_classifier(
    model_path: Path, labels: Sequence[Label], *, max_seq_length: int, problem_type: str = "single_label"
) -> TaskModel:
    """Load `model_path` with a fresh head for `labels` (one output for regression), base weights frozen."""
    id2label = {index: str(label) for index, label in enumerate(labels)} if labels else {0: "value"}
    model, loading = AutoModelForSequenceClassification.from_pretrained(
        model_path,
        num_labels=len(id2label),
        problem_type=HF_PROBLEM_TYPES[problem_type],
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
        # A checkpoint that already has a classification head of another size gets a new one.
        ignore_mismatched_sizes=True,
        dtype=torch.float32,
        output_loading_info=True,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    _ensure_padding(model, tokenizer)
    # Mismatched entries are (key, checkpoint shape, model shape) tuples.
    mismatched = {entry[0] if isinstance(entry, tuple) else entry for entry in loading["mismatched_keys"]}
    fresh = sorted(set(loading["missing_keys"]) | mismatched)
    head_modules = find_head_modules(model, fresh)
    model.requires_grad_(False)
    for name in head_modules:
        model.get_submodule(name).requires_grad_(True)
    pretrained = frozenset(
        key for key in model.state_dict() if key not in fresh and not _is_under(key, head_modules)
    )
    return TaskModel(model, tokenizer, head_modules, _usable_length(model, max_seq_length), pretrained)


def find_head_modules(model: nn.Module, fresh_keys: Sequence[str]) -> list[str]:
    """Top-level non-backbone children with parameters, plus backbone modules left uninitialised."""
    backbone = getattr(model, "base_model_prefix", "")
    children = dict(model.named_children())
    if backbone not in children:
        # No separable backbone: only what the checkpoint lacked counts as new.
        return sorted({key.split(".")[0] for key in fresh_keys})
    heads = [
        name for name, child in children.items() if name != backbone and any(True for _ in child.parameters())
    ]
    for key in fresh_keys:
        module_name = key.rpartition(".")[0]
        if module_name.split(".")[0] == backbone and module_name not in heads:
            logger.warning("%s was not in the checkpoint; it is trained and saved with the head", module_name)
            heads.append(module_name)
    return heads


def _ensure_padding(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Batches are padded; GPT-style tokenizers have no pad token, so borrow end-of-sequence."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise SpecError("the model's tokenizer has neither a pad nor an end token", param="base_model")
        tokenizer.pad_token = tokenizer.eos_token
    # Last-token heads (`score`) find the last real token through config.pad_token_id.
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def _usable_length(model: PreTrainedModel, max_seq_length: int) -> int:
    """The spec's length, capped by the model's position table (longer inputs would crash it)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    return min(max_seq_length, positions) if isinstance(positions, int) else max_seq_length


def _is_under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
