"""The shapes of a job's batches, from its examples' token counts alone: what the dry run costs.

Imports no torch: the API computes it while it validates a file. Batches pad to their longest
example (tuning.batching), so a step's cost follows its padded tokens (batch × width) and its
attention's token pairs (batch × width²), not the examples' own token counts. Training batches are
formed as `tuning.batching.epoch_order` forms them: grouped by length (windows of GROUP_BATCHES
batches sorted by length) or straight from a shuffled order; evaluation batches are length-sorted.
The shuffle here is a fixed seed's, not the job's: the figures are what an epoch costs, not which
examples meet.
"""

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

GROUP_BATCHES = 4  # tuning.batching.GROUP_BATCHES: batches per window sorted by length
SEED = 0


@dataclass(frozen=True)
class BatchShapes:
    """One epoch's batches: how many, their padded tokens and attention pairs, and the largest one."""

    count: int
    padded_tokens: int  # Σ batch × width
    token_pairs: int  # Σ batch × width², what attention's scores cost
    largest_tokens: int  # the largest batch × width: its activations make the peak
    largest_pairs: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def training_batches(lengths: Sequence[int], batch_size: int, *, group_by_length: bool) -> BatchShapes:
    """An epoch of training batches over examples of `lengths` tokens (already cut to max_seq_length)."""
    order = list(range(len(lengths)))
    random.Random(SEED).shuffle(order)
    if group_by_length:
        full = len(order) - len(order) % batch_size
        window = GROUP_BATCHES * batch_size
        grouped: list[int] = []
        for start in range(0, full, window):
            grouped.extend(sorted(order[start : min(start + window, full)], key=lambda i: -lengths[i]))
        order = grouped + order[full:]
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    return _shapes([[lengths[i] for i in batch] for batch in batches])


def evaluation_batches(lengths: Sequence[int], batch_size: int) -> BatchShapes:
    """The length-sorted batches of an evaluation (tuning.batching.batches_by_length)."""
    ordered = sorted(lengths, reverse=True)
    return _shapes([ordered[k : k + batch_size] for k in range(0, len(ordered), batch_size)])


def _shapes(batches: list[list[int]]) -> BatchShapes:
    tokens = [len(batch) * max(batch) for batch in batches]
    pairs = [len(batch) * max(batch) ** 2 for batch in batches]
    return BatchShapes(len(batches), sum(tokens), sum(pairs), max(tokens, default=0), max(pairs, default=0))
