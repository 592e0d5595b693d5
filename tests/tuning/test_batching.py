"""Batches: length-grouped training orders (seeded, every example once, little padding) and
evaluation batches sorted by length, whose metrics are the in-order ones."""

import random

import pytest
import torch

from tuning.batching import (
    Encoded,
    batches_by_length,
    batches_in_order,
    batches_of,
    epoch_order,
    length_grouped_order,
    shuffled_order,
)


def varied(examples: int, seed: int = 0) -> Encoded:
    """Examples of 3 to 96 tokens, most short, as real text is."""
    rng = random.Random(seed)
    lengths = [min(96, 3 + int(rng.expovariate(1 / 30))) for _ in range(examples)]
    return Encoded([[5] * n for n in lengths], [rng.randrange(4) for _ in lengths], pad_id=0)


def padded_tokens(encoded: Encoded, order: list[int], batch_size: int) -> int:
    return sum(batch["input_ids"].numel() for batch in batches_of(encoded, order, batch_size))


@pytest.mark.parametrize("examples", [1, 15, 16, 17, 945])
def test_a_grouped_order_holds_every_example_once_and_keeps_the_remainder_last(examples: int) -> None:
    encoded = varied(examples)
    lengths = [len(ids) for ids in encoded.input_ids]
    order = length_grouped_order(lengths, 16, torch.Generator().manual_seed(1))
    assert sorted(order) == list(range(examples))
    # The last len % 16 examples are the shuffled order's last, drawn from the same generator.
    remainder = examples % 16
    shuffled = shuffled_order(examples, torch.Generator().manual_seed(1))
    assert order[len(order) - remainder :] == shuffled[len(shuffled) - remainder :]


def test_a_grouped_order_is_the_seeds_and_pads_less_than_a_shuffled_one() -> None:
    encoded = varied(945)
    orders = [
        epoch_order(encoded, 16, torch.Generator().manual_seed(seed), group_by_length=grouped)
        for seed, grouped in ((42, True), (42, True), (43, True), (42, False))
    ]
    assert orders[0] == orders[1] and orders[0] != orders[2]
    assert orders[3] == shuffled_order(945, torch.Generator().manual_seed(42))
    real = sum(len(ids) for ids in encoded.input_ids)
    grouped, shuffled = (padded_tokens(encoded, order, 16) for order in (orders[0], orders[3]))
    assert grouped < 1.5 * real and grouped < 0.75 * shuffled


def test_evaluation_batches_come_longest_first_each_example_once() -> None:
    encoded = varied(50)
    batches = list(batches_by_length(encoded, 8))
    widths = [batch["input_ids"].shape[1] for batch in batches]
    assert widths == sorted(widths, reverse=True)
    assert sum(len(batch["labels"]) for batch in batches) == 50
    sorted_tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    assert sorted_tokens == sum(len(ids) for ids in encoded.input_ids)
    in_order = sum(batch["input_ids"].numel() for batch in batches_in_order(encoded, 8))
    assert sum(batch["input_ids"].numel() for batch in batches) < in_order
