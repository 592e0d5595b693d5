"""Tokenized examples and dynamically padded batches.

Texts are tokenized once, up front; each batch is padded only to its own longest example, so short
texts do not pay for the longest one in the file.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

Batch = dict[str, torch.Tensor]

# What one example's label is, and so how a batch stacks them:
#   index      a class index                      → long [B]
#   multi_hot  one 0/1 float per label            → float [B, L]
#   value      a regression target                → float [B]
#   tokens     a target id per input token, -100 where no loss is taken → long [B, T], padded with -100
LabelKind = Literal["index", "multi_hot", "value", "tokens"]
IGNORE_INDEX = -100  # cross_entropy's ignore_index: padding and tokens without a loss


@dataclass(frozen=True)
class Encoded:
    """Token ids per example and, for labelled data, each example's label (see LabelKind)."""

    input_ids: list[list[int]]
    labels: list[Any] | None
    pad_id: int
    label_kind: LabelKind = "index"

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence[int] | None,
    *,
    max_length: int,
) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has no pad token")
    return Encoded(ids, list(labels) if labels is not None else None, pad_id)


def collate(encoded: Encoded, indices: Sequence[int]) -> Batch:
    """Right-pad the chosen examples to their longest; the mask marks real tokens."""
    rows = [encoded.input_ids[i] for i in indices]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), encoded.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if encoded.labels is not None:
        batch["labels"] = _stack_labels(encoded, indices, width)
    return batch


def _stack_labels(encoded: Encoded, indices: Sequence[int], width: int) -> torch.Tensor:
    assert encoded.labels is not None
    labels = [encoded.labels[i] for i in indices]
    if encoded.label_kind == "tokens":
        stacked = torch.full((len(labels), width), IGNORE_INDEX, dtype=torch.long)
        for i, row in enumerate(labels):
            stacked[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return stacked
    dtype = torch.long if encoded.label_kind == "index" else torch.float32
    return torch.tensor(labels, dtype=dtype)


def batches_in_order(encoded: Encoded, batch_size: int) -> Iterator[Batch]:
    for start in range(0, len(encoded), batch_size):
        yield collate(encoded, range(start, min(start + batch_size, len(encoded))))


def shuffled_order(examples: int, generator: torch.Generator) -> list[int]:
    """One epoch's order of the examples, drawn from `generator`, so a seed fixes every epoch's order."""
    return torch.randperm(examples, generator=generator).tolist()


def batches_of(encoded: Encoded, order: Sequence[int], batch_size: int, *, skip: int = 0) -> Iterator[Batch]:
    """The batches of one epoch's `order`, from batch `skip` on (a resumed epoch skips those it trained)."""
    for start in range(skip * batch_size, len(order), batch_size):
        yield collate(encoded, order[start : start + batch_size])


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return -(-examples // batch_size)  # the last, smaller batch is a step too


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
