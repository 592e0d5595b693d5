"""Metrics computed from whole-set predictions: F1 scores, R², perplexity."""

import math

import torch


def macro_f1(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over labels of F1 = 2TP / (2TP + FP + FN), as scikit-learn's f1_score(average="macro").

    Like scikit-learn, only labels that occur in the targets or the predictions are averaged: a
    validation set without some rare label is not scored on it.
    """
    present = torch.unique(torch.cat([predictions, targets])).tolist()
    scores = []
    for label in present:
        predicted, actual = predictions == label, targets == label
        true_positive = int((predicted & actual).sum())
        wrong = int((predicted ^ actual).sum())
        scores.append(1.0 if true_positive + wrong == 0 else 2 * true_positive / (2 * true_positive + wrong))
    return sum(scores) / len(scores)


def micro_f1(predicted: torch.Tensor, actual: torch.Tensor) -> float:
    """F1 of every (example, label) decision pooled, for 0/1 matrices [examples, labels].

    As scikit-learn's f1_score(average="micro"); with nothing to find and nothing found it is 1.0.
    """
    predicted, actual = predicted.bool(), actual.bool()
    return _f1(int((predicted & actual).sum()), int((predicted ^ actual).sum()))


def label_macro_f1(predicted: torch.Tensor, actual: torch.Tensor) -> float:
    """Mean over label columns of each column's F1, for 0/1 matrices [examples, labels].

    As macro_f1, only labels that occur in the targets or the predictions are averaged (scikit-learn's
    f1_score(average="macro", labels=those)): a label the validation set never mentions and the model
    never predicts says nothing about the model.
    """
    predicted, actual = predicted.bool(), actual.bool()
    present = (predicted | actual).any(dim=0)
    if not present.any():
        return 1.0
    true_positive = (predicted & actual).sum(dim=0)[present].tolist()
    wrong = (predicted ^ actual).sum(dim=0)[present].tolist()
    scores = [_f1(tp, w) for tp, w in zip(true_positive, wrong, strict=True)]
    return sum(scores) / len(scores)


def exact_match(predicted: torch.Tensor, actual: torch.Tensor) -> float:
    """Share of examples whose whole predicted label set is right (scikit-learn's subset accuracy)."""
    return (predicted.bool() == actual.bool()).all(dim=1).float().mean().item()


def r2(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """1 − SSres/SStot, as scikit-learn's r2_score; constant targets (SStot 0) score 0.0.

    Sums in float64: a set of large, close targets would lose SStot to float32 rounding.
    """
    predictions, targets = predictions.double(), targets.double()
    total = float(((targets - targets.mean()) ** 2).sum())
    if total == 0.0:
        return 0.0
    return 1.0 - float(((targets - predictions) ** 2).sum()) / total


def _f1(true_positive: int, wrong: int) -> float:
    """2TP / (2TP + FP + FN), where `wrong` = FP + FN; 1.0 when there was nothing to get right."""
    return 1.0 if true_positive + wrong == 0 else 2 * true_positive / (2 * true_positive + wrong)


def perplexity(mean_token_loss: float) -> float:
    """exp(mean cross-entropy per token); capped so that a diverged run reports inf, not an overflow."""
    return math.exp(mean_token_loss) if mean_token_loss < 700 else math.inf
