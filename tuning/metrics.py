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


def perplexity(mean_token_loss: float) -> float:
    """exp(mean cross-entropy per token); capped so that a diverged run reports inf, not an overflow."""
    return math.exp(mean_token_loss) if mean_token_loss < 700 else math.inf
