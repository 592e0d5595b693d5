"""Learning, not just running: every method of the catalogue beats the untrained head on the real
all-MiniLM-L6-v2, with the example job users POST, cut to a fixed, seeded budget of one epoch.

Select it alone with `pytest -m learning`.
"""

import logging
from pathlib import Path

import pytest

from benchmarks.methods import ORDER, run_example

logger = logging.getLogger(__name__)

BUDGET_EPOCHS = 1  # 30 optimizer steps over the 480 example lines


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("method", ORDER)
def test_every_method_beats_the_untrained_head(method: str, tmp_path: Path) -> None:
    row = run_example(method, tmp_path / method, epochs=BUDGET_EPOCHS)
    logger.warning(
        "%s: validation accuracy %.1f%% -> %.1f%% in %.0f s",
        method,
        100 * row.initial_accuracy,
        100 * row.accuracy,
        row.seconds,
    )
    # Four balanced classes: the untrained head sits near chance (25%). One epoch is a small budget
    # for the methods that train few weights (the input adapter reached +10.7 points with it), so the
    # bar is 8 points: 13 of the 160 validation lines, far beyond what seeded noise moves.
    assert row.accuracy >= row.initial_accuracy + 0.08
