"""Causal language modelling: next-token cross-entropy on the tokens an example teaches.

A `text` line teaches all its tokens, a `prompt_completion` line its completion, a `chat` line its
assistant turns (tuning.data.causal_lm says which tokens those are). The model's own language-model head
predicts: nothing is added, so every tensor of the loaded model counts as pretrained.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from tuning.batching import IGNORE_INDEX, Batch, Encoded
from tuning.build import limit_for_virtual_tokens
from tuning.data import AnyExample, DataFile, Label
from tuning.data import causal_lm as causal_lm_data
from tuning.data.causal_lm import Specials, encode_lm_examples, opening_id
from tuning.errors import DataError, SpecError
from tuning.evaluate import Evaluation, classifier_logits, evaluation_batches
from tuning.events import StopCheck, never_stop
from tuning.methods.virtual_tokens import position_limit
from tuning.metrics import perplexity
from tuning.spec import FORMATS_BY_TASK, JobSpec
from tuning.task_model import TaskModel
from tuning.tasks import TaskData


class CausalLm:
    kind = "causal_lm"

    def check_data(self, train: DataFile, validation: DataFile | None) -> TaskData:
        allowed = FORMATS_BY_TASK["causal_lm"]
        if train.format not in allowed:
            raise DataError(
                f"causal_lm reads {', '.join(allowed)} lines; the training file is {train.format}",
                param="training_file",
            )
        if validation is not None and validation.format != train.format:
            raise DataError(
                f"the validation file is {validation.format} but the training file is {train.format}",
                param="validation_file",
            )
        return TaskData(list(train.examples), list(validation.examples) if validation else [], [])

    def load(self, spec: JobSpec, base_path: Path, labels: Sequence[Label]) -> TaskModel:
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(base_path)
        eos_id = end_of_text_id(tokenizer, model.config)
        if tokenizer.pad_token_id is None:
            # Padding is masked out of attention and loss, so any id will do: borrow end-of-text.
            tokenizer.pad_token_id = eos_id
        model.requires_grad_(False)
        limit = position_limit(model.config)
        max_length = spec.hyperparameters.max_seq_length
        task_model = TaskModel(
            model,
            tokenizer,
            head_modules=[],
            max_length=min(max_length, limit) if limit else max_length,
            pretrained=frozenset(model.state_dict()),
        )
        limit_for_virtual_tokens(spec, task_model)
        return task_model

    def encode(
        self, task_model: TaskModel, spec: JobSpec, examples: Sequence[AnyExample], labels: Sequence[Label]
    ) -> Encoded:
        tokenizer = task_model.tokenizer

        def tokenize(text: str) -> tuple[list[int], list[tuple[int, int]]]:
            encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            return list(encoding["input_ids"]), [tuple(pair) for pair in encoding["offset_mapping"]]

        sequences = encode_lm_examples(
            tokenize,
            examples,  # type: ignore[arg-type]  # check_data let only LM formats through
            max_length=task_model.max_length,
            specials=specials_of(tokenizer, task_model.model.config),
            chat_template=spec.data.chat_template or tokenizer.chat_template,
            packing=spec.data.packing,
        )
        # A sequence whose only labelled token is its first has no next-token target: no loss to take.
        kept = [s for s in sequences if any(label != IGNORE_INDEX for label in s.labels[1:])]
        if sequences and not kept:
            raise DataError("no example has a token to learn once truncated to max_seq_length")
        pad_id = tokenizer.pad_token_id
        assert pad_id is not None  # set by load
        return Encoded([s.input_ids for s in kept], [s.labels for s in kept], pad_id, label_kind="tokens")

    def loss(
        self, model: nn.Module, batch: Batch, device: torch.device, *, mixed_precision: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = classifier_logits(model, batch, device, mixed_precision=mixed_precision)
        targets = next_token_targets(batch["labels"].to(device), logits.shape[1])
        return F.cross_entropy(_flat(logits), targets.reshape(-1), ignore_index=IGNORE_INDEX), logits

    def evaluate(
        self,
        model: nn.Module,
        encoded: Encoded,
        *,
        batch_size: int,
        device: torch.device,
        should_stop: StopCheck = never_stop,
        mixed_precision: bool = False,
    ) -> Evaluation:
        total_loss, tokens, correct = 0.0, 0, 0

        def visit(logits: torch.Tensor, batch: Batch) -> None:
            nonlocal total_loss, tokens, correct
            targets = next_token_targets(batch["labels"].to(logits.device), logits.shape[1])
            taken = targets != IGNORE_INDEX
            total_loss += F.cross_entropy(
                _flat(logits), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            tokens += int(taken.sum())
            correct += int(((logits.argmax(dim=-1) == targets) & taken).sum())

        evaluation_batches(
            model,
            encoded,
            batch_size=batch_size,
            device=device,
            visit=visit,
            should_stop=should_stop,
            mixed_precision=mixed_precision,
        )
        mean = total_loss / max(tokens, 1)  # token-weighted: long examples count for their length
        return Evaluation(
            {"loss": mean, "perplexity": perplexity(mean), "token_accuracy": correct / max(tokens, 1)},
            len(encoded),
        )


def end_of_text_id(tokenizer: PreTrainedTokenizerBase, config: object) -> int:
    """EOS from the tokenizer, else the model config (a BERT-style tokenizer on a decoder has none)."""
    candidates = (tokenizer.eos_token_id, getattr(config, "eos_token_id", None), tokenizer.sep_token_id)
    eos_id = causal_lm_data.end_of_text_id(candidates)
    if eos_id is None:
        raise SpecError("the model's tokenizer and config name no end-of-text token", param="base_model")
    return eos_id


def specials_of(tokenizer: PreTrainedTokenizerBase, config: object) -> Specials:
    eos_id = end_of_text_id(tokenizer, config)
    bos_id = tokenizer.bos_token_id
    return Specials(
        eos_id=eos_id,
        bos_id=opening_id(bos_id if isinstance(bos_id, int) else None, eos_id),
        eos_token=str(tokenizer.eos_token or tokenizer.convert_ids_to_tokens(eos_id)),
        bos_token=str(tokenizer.bos_token or ""),
    )


def next_token_targets(labels: torch.Tensor, positions: int) -> torch.Tensor:
    """The token each of the logits' `positions` predicts: labels[t + 1] at text position t.

    The labels move, not the logits: slicing (batch, T, vocabulary) logits would copy them for the
    loss and give back a zero-filled gradient of their full size, the largest tensors of a step.
    Prompt tuning puts its virtual tokens' outputs in front of the text's: those positions, and the
    text's last one, predict nothing.
    """
    ignored = torch.full_like(labels[:, :1], IGNORE_INDEX)
    shifted = torch.cat((labels[:, 1:], ignored), dim=1)
    virtual = positions - labels.shape[1]
    if virtual > 0:
        shifted = torch.cat((ignored.expand(-1, virtual), shifted), dim=1)
    return shifted


def _flat(logits: torch.Tensor) -> torch.Tensor:
    return logits.reshape(-1, logits.shape[-1])  # a view of whole (unsliced) logits: no copy


TASK = CausalLm()

__all__ = ["TASK", "CausalLm", "end_of_text_id", "next_token_targets", "specials_of"]
