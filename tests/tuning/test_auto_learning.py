"""Learning on data nobody tuned the defaults for: with "auto" hyperparameters (tuning.auto) every
method of the catalogue learns a cut of the second docstring task (benchmarks.docstrings `tools`:
numpy, redis, aws, rich), which no example spec was written for, on the real all-MiniLM-L6-v2.

Each job is the method's example spec with `epochs` and `learning_rate` left out, so both are auto:
64 training texts make 4 steps a pass, so auto trains 10 passes (40 steps, tuning.auto's upper
clamp), and every job reports on 96 held-out texts; a frozen mean-pool linear probe on the same cut is
logged beside them. Select it alone with `pytest -m learning`.
"""

import json
import logging
from pathlib import Path

import pytest

from benchmarks import docstrings
from benchmarks.auto_hyperparameters import probe_accuracy, run_job
from benchmarks.methods import ORDER

logger = logging.getLogger(__name__)

TRAIN, VALIDATION = 64, 96


@pytest.fixture(scope="module")
def tools_cut(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A deterministic cut of the tools task: 40 docstrings per library, split 64 / 96."""
    split = docstrings.build((TRAIN + VALIDATION) // 4, TRAIN, VALIDATION, libraries="tools")
    folder = tmp_path_factory.mktemp("tools")
    paths = folder / "train.jsonl", folder / "validation.jsonl"
    for path, rows in zip(paths, (split.train, split.test), strict=True):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    logger.warning("frozen mean-pool linear probe on the cut: %.1f%%", 100 * probe_accuracy(*paths))
    return paths


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("method", ORDER)
def test_auto_hyperparameters_learn_a_task_nobody_tuned_them_for(
    method: str, tools_cut: tuple[Path, Path], tmp_path: Path
) -> None:
    train, validation = tools_cut
    row = run_job(method, tmp_path / method, train, validation, examples=False)
    logger.warning(
        "%s (auto: %d epochs, lr %.2g): validation accuracy %.1f%% -> %.1f%% in %.0f s",
        method,
        row.epochs,
        row.learning_rate,
        100 * row.initial_accuracy,
        100 * row.accuracy,
        row.seconds,
    )
    assert row.epochs == 10  # 64 texts at batch 16: auto's most passes
    # Four classes near balance: the untrained head sits near chance. Over 96 texts a rate near 50%
    # has a binomial standard deviation of 5.1 points; 15 points is about 3 of them, 15 texts.
    assert row.accuracy >= row.initial_accuracy + 0.15
