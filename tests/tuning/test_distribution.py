"""How a batch is split among processes and passes (tuning.distribution), and that a batch trained in
passes (gradient accumulation, in one process) ends as in one pass, to float32 rounding."""

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.tuning.distributed_jobs import assert_same_job, job_spec
from tuning import RunResult, run
from tuning.batching import IGNORE_INDEX
from tuning.distribution import Ranks


def batch(rows: int, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.arange(rows * 3).reshape(rows, 3),
        "attention_mask": torch.ones(rows, 3, dtype=torch.long),
        "labels": labels if labels is not None else torch.arange(rows),
    }


def test_shares_split_rows_among_processes_and_weigh_them_by_examples() -> None:
    whole = batch(7)
    first, second = (Ranks(rank, 2).shares(whole, causal_lm=False) for rank in (0, 1))
    assert [len(p.batch["labels"]) for p in first + second] == [4, 3]
    assert [p.units_share for p in first + second] == [4 / 7, 3 / 7]
    assert [p.loss_scale for p in first + second] == [8 / 7, 6 / 7]  # DDP divides by 2
    assert torch.equal(torch.cat([p.batch["labels"] for p in first + second]), whole["labels"])


def test_passes_bound_the_rows_of_one_forward() -> None:
    passes = Ranks(0, 2).shares(batch(7), causal_lm=False, rows_per_pass=3)
    assert [p.batch["labels"].tolist() for p in passes] == [[0, 1, 2], [3]]
    assert sum(p.units_share for p in passes) == pytest.approx(4 / 7)


def test_causal_lm_shares_are_weighed_by_target_tokens() -> None:
    labels = torch.tensor([[1, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]])  # 2 targets, then 0
    (first,), (second,) = (Ranks(rank, 2).shares(batch(2, labels), causal_lm=True) for rank in (0, 1))
    assert (first.units_share, second.units_share) == (1.0, 0.0)


def test_a_process_without_rows_still_steps_on_a_row_that_counts_zero() -> None:
    (share,) = Ranks(2, 3).shares(batch(2), causal_lm=False)
    assert len(share.batch["labels"]) == 1 and share.loss_scale == share.units_share == 0.0


def test_one_process_alone_trains_the_whole_batch_unscaled() -> None:
    whole = batch(7)
    (share,) = Ranks().shares(whole, causal_lm=False)
    assert share.batch is whole and share.loss_scale == 1.0


def test_a_batch_in_passes_ends_as_in_one_pass(
    nodrop_files: dict[str, Any],
    one_process: tuple[RunResult, Path, Any],
    tmp_path: Path,
) -> None:
    result = run(job_spec(1, max_examples_per_device=3), tmp_path / "out", **nodrop_files)
    assert_same_job((one_process[0], one_process[1]), (result, tmp_path / "out"))
