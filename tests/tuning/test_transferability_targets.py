"""LogME beyond single-label classes: regression targets (one column) and multi-label sets (a 0/1
column per label), from the file to a score per candidate."""

import math
from pathlib import Path

import pytest
import torch

from tests.tuning.datasets import write_jsonl
from tests.tuning.multi_regression_data import multi_label_lines, regression_lines
from tuning.errors import DataError
from tuning.transferability import (
    Candidate,
    logme,
    logme_of_targets,
    read_scoring_data,
    score_candidates,
    scoring_targets,
    target_evidences,
)


def features_and_target(n: int = 60, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=generator, dtype=torch.float64)
    target = features[:, :2].sum(dim=1) + 0.3 * torch.randn(n, generator=generator, dtype=torch.float64)
    return features, target


def test_regression_evidence_is_the_marginal_likelihood_at_its_alpha_and_beta() -> None:
    features, target = features_and_target()
    (evidence,) = target_evidences(features, target.unsqueeze(1))
    n = features.shape[0]
    covariance = features @ features.T / evidence.alpha + torch.eye(n, dtype=torch.float64) / evidence.beta
    direct = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), covariance)
    assert evidence.log_evidence == pytest.approx(float(direct.log_prob(target)) / n, rel=1e-9)


def test_features_that_determine_the_target_score_higher() -> None:
    features, target = features_and_target()
    noise = torch.randn(features.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert (
        logme_of_targets(features, target.unsqueeze(1)) > logme_of_targets(noise, target.unsqueeze(1)) + 0.5
    )


def test_one_hot_targets_give_the_class_score() -> None:
    features, _ = features_and_target()
    classes = torch.arange(features.shape[0]) % 3
    one_hot = scoring_targets(classes.tolist())
    assert one_hot.shape == (features.shape[0], 3)
    assert logme_of_targets(features, one_hot) == pytest.approx(logme(features, classes), rel=1e-12)


def test_targets_of_each_label_kind() -> None:
    assert scoring_targets([("b",), (), ("a", "b")]).tolist() == [[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
    assert scoring_targets([1.5, 2.0]).tolist() == [[1.5], [2.0]]
    with pytest.raises(DataError, match="at least 2 distinct labels"):
        scoring_targets([("a",), ()])


def test_regression_and_multi_label_files_score_each_candidate(tiny_bert_dir: Path, tmp_path: Path) -> None:
    candidates = [Candidate("tiny-bert", tiny_bert_dir)]
    regression = write_jsonl(tmp_path / "counts.jsonl", regression_lines(40, seed=1))
    texts, values = read_scoring_data(regression, "sequence_classification", max_examples=30)
    assert values is not None and len(values) == 30 and all(isinstance(v, float) for v in values)
    multi = write_jsonl(tmp_path / "topics.jsonl", multi_label_lines(40, seed=1))
    multi_texts, sets = read_scoring_data(multi, "sequence_classification", max_examples=30)
    assert sets is not None and all(isinstance(labels, tuple) for labels in sets)
    for scored_texts, labels in ((texts, values), (multi_texts, sets)):
        (result,) = score_candidates(scored_texts, labels, candidates, "sequence_classification")
        assert result["score"] == "logme" and math.isfinite(result["value"]) and result["rank"] == 1


def test_language_model_lines_cannot_be_scored_by_logme(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lm.jsonl", ['{"text": "just text"}'])
    with pytest.raises(DataError, match="the file is text"):
        read_scoring_data(path, "sequence_classification", max_examples=10)
