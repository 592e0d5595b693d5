"""Our metrics against scikit-learn's on random predictions, and their edge cases."""

import math

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, r2_score

from tuning.metrics import exact_match, label_macro_f1, macro_f1, micro_f1, perplexity, r2

SEEDS = range(5)


def random_label_sets(seed: int, examples: int = 40, labels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted, actual) 0/1 matrices; the last label column is rare, so absent in some draws."""
    generator = torch.Generator().manual_seed(seed)
    predicted = torch.rand(examples, labels, generator=generator) > 0.5
    actual = torch.rand(examples, labels, generator=generator) > 0.6
    predicted[:, -1] = torch.rand(examples, generator=generator) > 0.97
    actual[:, -1] = torch.rand(examples, generator=generator) > 0.97
    return predicted, actual


@pytest.mark.parametrize("seed", SEEDS)
def test_multi_label_scores_equal_scikit_learns(seed: int) -> None:
    predicted, actual = random_label_sets(seed)
    present = [i for i in range(actual.shape[1]) if bool((predicted[:, i] | actual[:, i]).any())]
    assert micro_f1(predicted, actual) == pytest.approx(f1_score(actual, predicted, average="micro"))
    assert label_macro_f1(predicted, actual) == pytest.approx(
        f1_score(actual, predicted, average="macro", labels=present)
    )
    assert exact_match(predicted, actual) == pytest.approx(accuracy_score(actual, predicted))


def test_a_label_nobody_mentions_is_not_averaged() -> None:
    predicted = torch.tensor([[1, 0, 0], [0, 1, 0]])
    actual = torch.tensor([[1, 0, 0], [1, 1, 0]])
    # Label 0: TP 1, FN 1 → 2/3; label 1: TP 1 → 1; label 2 appears nowhere.
    assert label_macro_f1(predicted, actual) == pytest.approx((2 / 3 + 1) / 2)
    assert micro_f1(predicted, actual) == pytest.approx(2 * 2 / (2 * 2 + 1))
    assert exact_match(predicted, actual) == 0.5


def test_nothing_to_find_and_nothing_found_is_perfect() -> None:
    empty = torch.zeros(3, 2, dtype=torch.bool)
    assert (micro_f1(empty, empty), label_macro_f1(empty, empty), exact_match(empty, empty)) == (
        1.0,
        1.0,
        1.0,
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_single_label_macro_f1_equals_scikit_learns(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    predictions = torch.randint(0, 4, (50,), generator=generator)
    targets = torch.randint(0, 4, (50,), generator=generator)
    assert macro_f1(predictions, targets) == pytest.approx(f1_score(targets, predictions, average="macro"))


@pytest.mark.parametrize("seed", SEEDS)
def test_r2_equals_scikit_learns(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randn(30, generator=generator, dtype=torch.float64) * 3 + 10
    predictions = targets + torch.randn(30, generator=generator, dtype=torch.float64)
    assert r2(predictions, targets) == pytest.approx(r2_score(targets, predictions), abs=1e-9)
    worse_than_the_mean = torch.full_like(targets, 100.0)
    assert r2(worse_than_the_mean, targets) == pytest.approx(r2_score(targets, worse_than_the_mean), abs=1e-9)
    assert r2(worse_than_the_mean, targets) < 0


def test_r2_of_constant_targets_is_zero() -> None:
    targets = torch.full((4,), 2.5)
    assert r2(torch.tensor([1.0, 2.0, 3.0, 4.0]), targets) == 0.0
    assert r2(targets, targets) == 0.0


def test_perplexity_caps_a_diverged_loss() -> None:
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert perplexity(1e4) == math.inf
