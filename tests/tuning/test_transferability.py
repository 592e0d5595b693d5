"""Transferability scores: LogME's evidence is the Bayesian marginal likelihood at its maximum, and
both scores rank a model whose features fit the data above one whose features do not."""

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.tiny_models import make_tiny_gpt2, minilm_path
from tests.tuning.datasets import sentiment_lines, write_jsonl
from tuning.errors import DataError
from tuning.models import BUNDLED_MODEL_ID
from tuning.transferability import (
    Candidate,
    language_model_loss,
    logme,
    logme_evidences,
    mean_pooled_features,
    rank,
    read_scoring_data,
    read_texts,
    score_candidates,
)

logger = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def marginal_log_likelihood(features: torch.Tensor, y: torch.Tensor, alpha: float, beta: float) -> float:
    """log p(y | F, α, β) with w ~ N(0, α⁻¹I), y ~ N(Fw, β⁻¹I): y ~ N(0, α⁻¹FFᵀ + β⁻¹I), directly."""
    n = features.shape[0]
    covariance = features @ features.T / alpha + torch.eye(n, dtype=torch.float64) / beta
    normal = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), covariance)
    return float(normal.log_prob(y))


def noisy_class_features(n: int, d: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features that carry each class in one direction, buried in unit noise: a partial linear fit."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes  # every class present
    features = torch.randn(n, d, generator=generator, dtype=torch.float64)
    features[:, :classes] += torch.nn.functional.one_hot(labels, classes).to(torch.float64)
    return features, labels


@pytest.mark.parametrize(("n", "d"), [(60, 8), (12, 30)], ids=["more-samples", "more-features"])
def test_logme_is_the_marginal_likelihood_at_its_alpha_and_beta(n: int, d: int) -> None:
    features, labels = noisy_class_features(n, d, classes=3, seed=n + d)
    evidences = logme_evidences(features, labels)
    assert len(evidences) == 3
    direct = []
    for column, evidence in enumerate(evidences):
        y = (labels == column).to(torch.float64)
        at_fit = marginal_log_likelihood(features, y, evidence.alpha, evidence.beta)
        assert evidence.log_evidence * n == pytest.approx(at_fit, rel=1e-7)
        direct.append(at_fit / n)
    assert logme(features, labels) == pytest.approx(sum(direct) / 3, rel=1e-7)


def test_the_fixed_point_is_the_evidence_maximum() -> None:
    # Many samples, few features, noisy classes: each column's evidence peaks at a finite α and β.
    features, labels = noisy_class_features(300, 6, classes=3, seed=7)
    for column, evidence in enumerate(logme_evidences(features, labels)):
        assert evidence.iterations < 100, "an interior maximum is reached in a few dozen steps"
        y = (labels == column).to(torch.float64)
        at_fit = marginal_log_likelihood(features, y, evidence.alpha, evidence.beta)
        # Moving α or β either way lowers the evidence.
        for factor in (0.98, 1.02):
            assert marginal_log_likelihood(features, y, evidence.alpha * factor, evidence.beta) < at_fit
            assert marginal_log_likelihood(features, y, evidence.alpha, evidence.beta * factor) < at_fit


def test_logme_ranks_separating_features_above_random_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    noise = torch.randn(200, 16, generator=generator)
    separating = noise.clone()
    separating[:, :4] += 3.0 * torch.nn.functional.one_hot(labels, 4)  # a class-mean direction per class
    random_features = torch.randn(200, 16, generator=generator)
    assert logme(separating, labels) > logme(random_features, labels) + 0.1


def test_logme_works_on_float32_features_and_is_invariant_to_their_order() -> None:
    features, labels = noisy_class_features(50, 6, classes=2, seed=3)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    assert logme(features.float(), labels) == pytest.approx(logme(features, labels), rel=1e-5)
    assert logme(features[order], labels[order]) == pytest.approx(logme(features, labels), rel=1e-9)


def test_features_are_mean_pooled_over_real_tokens_only(tiny_bert_dir: Path) -> None:
    short, long = "great movie", "the plot was really awful and far too long for anyone"
    alone = mean_pooled_features(tiny_bert_dir, [short])
    padded = mean_pooled_features(tiny_bert_dir, [short, long])  # `short` padded to `long`'s length
    assert padded.shape == (2, 32) and padded.dtype == torch.float32
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(padded[0], padded[1])


def test_minilm_scores_higher_than_a_random_tiny_bert_on_the_example_data(tiny_bert_dir: Path) -> None:
    texts, labels = read_scoring_data(EXAMPLES / "train.jsonl", "sequence_classification", max_examples=200)
    assert len(texts) == 200 and labels is not None and len(set(labels)) == 4
    candidates = [Candidate("tiny-bert", tiny_bert_dir), Candidate(BUNDLED_MODEL_ID, minilm_path())]
    results = score_candidates(texts, labels, candidates, "sequence_classification")
    logger.info("LogME on examples/train.jsonl (200 sampled lines): %s", json.dumps(results))
    assert [r["model"] for r in results] == [BUNDLED_MODEL_ID, "tiny-bert"]
    assert [r["rank"] for r in results] == [1, 2]
    assert results[0]["value"] > results[1]["value"]
    assert [r["feature_dim"] for r in results] == [384, 32]
    for result in results:
        assert result["score"] == "logme" and result["higher_is_better"] is True
        assert result["examples"] == 200 and result["seconds"] > 0 and math.isfinite(result["value"])
        assert "error" not in result


def test_lm_cross_entropy_is_the_models_own_loss_over_every_predicted_token(tiny_gpt2_dir: Path) -> None:
    texts = ["the movie was great", "a really long and boring story about nothing at all"]
    measured = language_model_loss(tiny_gpt2_dir, texts)
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for text in texts:  # one at a time: no padding, HF's mean loss over len-1 predictions
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            total += float(model(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
            tokens += ids.shape[1] - 1
    assert measured.tokens == tokens
    assert measured.cross_entropy == pytest.approx(total / tokens, rel=1e-5)
    assert measured.perplexity == pytest.approx(math.exp(total / tokens), rel=1e-5)


def trained_gpt2(directory: Path, texts: list[str]) -> Path:
    """The tiny GPT-2 after some next-token steps on `texts`: a decoder whose features fit the data."""
    make_tiny_gpt2(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    for _ in range(15):
        optimizer.zero_grad()
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
    model.save_pretrained(directory)
    return directory


def test_perplexity_ranks_a_model_that_fits_the_texts_first_and_refuses_encoders(
    tmp_path: Path, tiny_gpt2_dir: Path, tiny_bert_dir: Path
) -> None:
    texts = [json.loads(line)["text"] for line in sentiment_lines(16, seed=5)]
    candidates = [
        Candidate("tiny-bert", tiny_bert_dir),
        Candidate("tiny-gpt2", tiny_gpt2_dir),
        Candidate("trained-gpt2", trained_gpt2(tmp_path / "trained-gpt2", texts)),
    ]
    results = score_candidates(texts, None, candidates, "causal_lm")
    assert [r["model"] for r in results] == ["trained-gpt2", "tiny-gpt2", "tiny-bert"]
    assert [r["rank"] for r in results] == [1, 2, None]
    best, untrained, encoder = results
    assert best["value"] < untrained["value"] and best["higher_is_better"] is False
    assert best["value"] == pytest.approx(math.exp(best["cross_entropy"]))
    assert best["tokens"] == untrained["tokens"] > 0
    assert encoder["value"] is None and encoder["score"] == "perplexity"
    assert "no trained causal language-model head" in encoder["error"]


def test_rank_orders_by_each_scores_direction_and_puts_unscored_last() -> None:
    results: list[dict[str, Any]] = [
        {"model": "a", "score": "perplexity", "value": 30.0, "higher_is_better": False},
        {"model": "b", "score": "perplexity", "value": None, "higher_is_better": False},
        {"model": "c", "score": "perplexity", "value": 12.0, "higher_is_better": False},
    ]
    assert [(r["model"], r["rank"]) for r in rank(results)] == [("c", 1), ("a", 2), ("b", None)]
    logme_results = [{**r, "score": "logme", "higher_is_better": True} for r in results]
    assert [r["model"] for r in rank(logme_results)] == ["a", "c", "b"]


def test_scoring_data_is_a_seeded_sample_in_file_order(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", sentiment_lines(50, seed=1))
    texts, labels = read_scoring_data(path, "sequence_classification", max_examples=10)
    again, _ = read_scoring_data(path, "sequence_classification", max_examples=10)
    every, every_label = read_scoring_data(path, "sequence_classification", max_examples=1000)
    assert texts == again and len(texts) == 10 and labels is not None and len(labels) == 10
    positions = [every.index(text) for text in texts]
    assert positions == sorted(positions), "the sample keeps the file's order"
    assert len(every) == 50 and every_label is not None
    lm_texts, lm_labels = read_scoring_data(path, "causal_lm", max_examples=1000)
    assert lm_texts == every and lm_labels is None


def test_language_model_texts_come_from_each_line_format(tmp_path: Path) -> None:
    formats = {
        "text": ({"text": "plain text"}, "plain text"),
        "prompt_completion": ({"prompt": "Q: hi ", "completion": "A: hello"}, "Q: hi A: hello"),
        "chat": (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            "hi\nhello",
        ),
    }
    for line, text in formats.values():
        path = write_jsonl(tmp_path / "lm.jsonl", [json.dumps(line)] * 2)
        assert read_texts(path) == [text, text]
    # A file mixing formats is refused at its first odd line, as at upload.
    path = write_jsonl(tmp_path / "mixed.jsonl", [json.dumps(line) for line, _ in formats.values()])
    with pytest.raises(DataError, match="line 2: "):
        read_texts(path)


def test_logme_needs_two_classes(tiny_bert_dir: Path) -> None:
    with pytest.raises(DataError, match="at least 2 distinct labels"):
        score_candidates(
            ["a", "b"], ["x", "x"], [Candidate("tiny-bert", tiny_bert_dir)], "sequence_classification"
        )
