"""Tokenized examples and dynamically padded batches.

Texts are tokenized once, up front; each batch is padded only to its own longest example, so short
texts do not pay for the longest one in the file; training batches are grouped by length and
evaluation batches sorted by it, so they do not pay for the longest one in a random batch either.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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


class FrozenOutputs(Protocol):
    """A frozen part's cached outputs per example (tuning.frozen_prefix), padded for a batch."""

    def padded(self, indices: Sequence[int]) -> torch.Tensor | None:
        """[B, T, hidden] for the chosen examples, zeros past each one's length; None: none cached."""
        ...


@dataclass(frozen=True)
class Encoded:
    """Token ids per example and, for labelled data, each example's label (see LabelKind).

    With `frozen_outputs` caching them, a batch carries the frozen part's outputs (`frozen_outputs`,
    for tuning.frozen_prefix's model) in place of `input_ids`.
    """

    input_ids: list[list[int]]
    labels: list[Any] | None
    pad_id: int
    label_kind: LabelKind = "index"
    frozen_outputs: FrozenOutputs | None = None

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
    cached = encoded.frozen_outputs.padded(indices) if encoded.frozen_outputs is not None else None
    if cached is not None:
        batch = {"frozen_outputs": cached, "attention_mask": attention_mask}
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


def batches_by_length(encoded: Encoded, batch_size: int) -> Iterator[Batch]:
    """Every example once, longest first: each batch pads to a length near its examples' own (the
    peak memory comes first, too). For evaluations, whose sums and metrics do not depend on order."""
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded.input_ids[i]))
    for start in range(0, len(order), batch_size):
        yield collate(encoded, order[start : start + batch_size])


def shuffled_order(examples: int, generator: torch.Generator) -> list[int]:
    """One epoch's order of the examples, drawn from `generator`, so a seed fixes every epoch's order."""
    return torch.randperm(examples, generator=generator).tolist()


GROUP_BATCHES = 4  # batches per window sorted by length: 1.23× the real tokens on varied text, vs 2×


def length_grouped_order(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[int]:
    """One epoch's order whose consecutive `batch_size` chunks hold examples of similar length.

    A shuffled order (`shuffled_order`'s) is cut into windows of GROUP_BATCHES batches; each window
    is sorted by length (longest first, ties in shuffled order) and cut into batches, and the batches
    are shuffled, both draws from `generator`, so a seed fixes every epoch's order. The examples past
    the last full batch (the shuffled order's last len % batch_size) stay the last, smaller batch, so
    `batches_of` cuts this order into exactly these batches.
    """
    shuffled = shuffled_order(len(lengths), generator)
    full = len(shuffled) - len(shuffled) % batch_size
    window = GROUP_BATCHES * batch_size
    batches: list[list[int]] = []
    for start in range(0, full, window):
        group = sorted(shuffled[start : min(start + window, full)], key=lambda i: -lengths[i])
        batches.extend(group[k : k + batch_size] for k in range(0, len(group), batch_size))
    picked = torch.randperm(len(batches), generator=generator).tolist()
    return [index for batch in picked for index in batches[batch]] + shuffled[full:]


def epoch_order(
    encoded: Encoded, batch_size: int, generator: torch.Generator, *, group_by_length: bool
) -> list[int]:
    """One epoch's data order: length-grouped (`hyperparameters.group_by_length`) or shuffled."""
    if group_by_length:
        return length_grouped_order([len(ids) for ids in encoded.input_ids], batch_size, generator)
    return shuffled_order(len(encoded), generator)


def batches_of(encoded: Encoded, order: Sequence[int], batch_size: int, *, skip: int = 0) -> Iterator[Batch]:
    """The batches of one epoch's `order`, from batch `skip` on (a resumed epoch skips those it trained)."""
    for indices in batch_indices(order, batch_size, skip=skip):
        yield collate(encoded, indices)


def batch_indices(order: Sequence[int], batch_size: int, *, skip: int = 0) -> Iterator[Sequence[int]]:
    """The examples of each of `batches_of`'s batches, for a caller that collates them itself, later."""
    for start in range(skip * batch_size, len(order), batch_size):
        yield order[start : start + batch_size]


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return -(-examples // batch_size)  # the last, smaller batch is a step too


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
