"""Which base model? Scores of how reusable a model's frozen features are for a data file, before training.

LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
arXiv:2102.11005): per one-hot class column y, maximise the evidence of Bayesian linear regression on
the features F by the fixed point γ = Σ βσᵢ/(α+βσᵢ), α ← γ/‖m‖², β ← (n−γ)/‖Fm−y‖²; the score is the
mean over classes of log p(y | F, α, β) / n. Regression is LogME's native case (y is the target
itself, one column); multi-label data has one 0/1 column per label, and the score is their mean.
For language-model data: the zero-shot mean token cross-entropy of the model's own LM head, and its
perplexity.
"""

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from tuning.data import (
    AnyExample,
    ChatExample,
    Example,
    Label,
    MultiLabelExample,
    PromptCompletionExample,
    RegressionExample,
    read_data_file,
    sort_labels,
)
from tuning.device import pick_device
from tuning.errors import DataError, TuningError
from tuning.spec import FORMATS_BY_TASK

logger = logging.getLogger(__name__)

TransferTask = Literal["sequence_classification", "causal_lm"]
ScoreName = Literal["logme", "perplexity"]
# One example's label as scoring reads it: a class, a regression target, or a multi-label set.
ScoringLabel = Label | float | tuple[Label, ...]

MAX_LENGTH = 128
BATCH_SIZE = 32
# An LM batch holds batch × length × vocabulary logits: 8 × 128 × 50k floats is 200 MB already.
LM_BATCH_SIZE = 8
# Far tighter than the paper's 1e-3: the evidence must sit at its stationary point to 1e-6.
TOLERANCE = 1e-10
MAX_ITERATIONS = 1000
# Keeps α and β finite when a column is fitted exactly (‖Fm−y‖ = 0) or m vanishes.
FLOOR = 1e-12


class NoLanguageModelHead(TuningError):
    """The candidate cannot score language-model data: no trained causal LM head to evaluate."""

    code = "no_language_model_head"


@dataclass(frozen=True)
class Candidate:
    id: str
    path: Path


@dataclass(frozen=True)
class Evidence:
    """The maximised evidence of one class column: its α, β and log evidence per sample."""

    alpha: float
    beta: float
    log_evidence: float
    iterations: int


# ---------------------------------------------------------------------------------------- LogME


def logme(features: torch.Tensor, labels: torch.Tensor) -> float:
    """LogME of `features` (n×d) for class indices `labels` (n): higher means features fit better."""
    return sum(e.log_evidence for e in logme_evidences(features, labels)) / _class_count(labels)


def logme_evidences(features: torch.Tensor, labels: torch.Tensor) -> list[Evidence]:
    """One maximised evidence per class column of the one-hot labels."""
    targets = torch.nn.functional.one_hot(labels.long().cpu(), _class_count(labels))
    return target_evidences(features, targets)


def logme_of_targets(features: torch.Tensor, targets: torch.Tensor) -> float:
    """LogME for target columns (n×k): the mean over columns of each one's log evidence per sample.

    One-hot columns give `logme`; a single column of numbers is regression; 0/1 columns multi-label.
    """
    evidences = target_evidences(features, targets)
    return sum(e.log_evidence for e in evidences) / len(evidences)


def target_evidences(features: torch.Tensor, targets: torch.Tensor) -> list[Evidence]:
    """One maximised evidence per column of `targets` (n×k)."""
    f = features.detach().to(torch.float64).cpu()
    y = targets.detach().to(torch.float64).cpu()
    # One SVD serves every column: only Uᵀy changes between columns.
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    sigma = s**2
    return [_maximise_evidence(u, sigma, y[:, c], dim=f.shape[1]) for c in range(y.shape[1])]


def _class_count(labels: torch.Tensor) -> int:
    return int(labels.max().item()) + 1


def _maximise_evidence(u: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor, *, dim: int) -> Evidence:
    n = y.shape[0]
    x2 = (u.T @ y) ** 2
    # The part of y outside F's column space: the residual no weight vector can remove.
    outside = max(float(y @ y - x2.sum()), 0.0)
    alpha, beta, iterations, converged = 1.0, 1.0, 0, False
    while not converged and iterations < MAX_ITERATIONS:
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2, residual = _fit_terms(sigma, x2, outside, t)
        alpha, beta = gamma / max(m2, FLOOR), (n - gamma) / max(residual, FLOOR)
        converged = abs(alpha / beta - t) <= TOLERANCE * t
        iterations += 1
    m2, residual = _fit_terms(sigma, x2, outside, alpha / beta)
    log_det = float(torch.log(alpha + beta * sigma).sum()) + (dim - sigma.shape[0]) * math.log(alpha)
    log_evidence = (
        dim / 2 * math.log(alpha)
        + n / 2 * math.log(beta)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * residual
        - alpha / 2 * m2
        - log_det / 2
    )
    return Evidence(alpha, beta, log_evidence / n, iterations)


def _fit_terms(sigma: torch.Tensor, x2: torch.Tensor, outside: float, t: float) -> tuple[float, float]:
    """‖m‖² and ‖Fm−y‖² of the posterior mean m at α/β = t, from the SVD alone."""
    m2 = float((sigma * x2 / (sigma + t) ** 2).sum())
    residual = float((x2 * (t / (sigma + t)) ** 2).sum()) + outside
    return m2, residual


# ------------------------------------------------------------------------------------- features


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # GPT-2-style tokenizers have no pad token; padded positions are masked out anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _batches(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, size: int) -> list[list[str]]:
    if tokenizer.pad_token is None:
        size = 1  # nothing to pad with: one text at a time
    return [list(texts[i : i + size]) for i in range(0, len(texts), size)]


@torch.no_grad()
def mean_pooled_features(path: Path, texts: Sequence[str]) -> torch.Tensor:
    """n×d float32: the frozen model's last hidden states averaged over each text's real tokens."""
    device = pick_device()
    tokenizer = load_tokenizer(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).to(device).eval()
    pooled = []
    for batch in _batches(texts, tokenizer, BATCH_SIZE):
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        encoded = encoded.to(device)
        hidden = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
        mask = encoded["attention_mask"].unsqueeze(-1).to(torch.float32)
        states = hidden.last_hidden_state.to(torch.float32)
        pooled.append(((states * mask).sum(1) / mask.sum(1).clamp(min=1.0)).cpu())
    return torch.cat(pooled)


# ------------------------------------------------------------------------------- language model


@dataclass(frozen=True)
class LanguageModelLoss:
    cross_entropy: float  # mean over every predicted token, nats
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.cross_entropy)


def load_causal_lm(path: Path) -> Any:
    """The model with its LM head, refusing one whose head the checkpoint does not hold."""
    try:
        # With output_loading_info the call returns (model, info); its stubs know only the model.
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, output_loading_info=True
        )
    except ValueError as error:  # transformers: no causal-LM class for this architecture
        raise NoLanguageModelHead(f"no causal language-model head for this architecture: {error}") from None
    model, info = loaded
    if info["missing_keys"]:
        # A head made up at load time would score random predictions, not the model.
        missing = ", ".join(sorted(info["missing_keys"])[:3])
        raise NoLanguageModelHead(
            f"the checkpoint has no trained causal language-model head (missing {missing}, ...); "
            "it is an encoder: score it with task sequence_classification (LogME) instead"
        )
    return model


@torch.no_grad()
def language_model_loss(path: Path, texts: Sequence[str]) -> LanguageModelLoss:
    """Zero-shot next-token cross-entropy of the model on `texts`, each cut at MAX_LENGTH tokens."""
    device = pick_device()
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path).to(device).eval()
    total, tokens = 0.0, 0
    for batch in _batches(texts, tokenizer, LM_BATCH_SIZE):
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        encoded = encoded.to(device)
        logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
        # Token t predicts token t+1; padded targets do not count.
        targets = encoded["input_ids"][:, 1:]
        counted = encoded["attention_mask"][:, 1:].bool()
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), targets, reduction="none"
        )
        total += float(losses[counted].sum())
        tokens += int(counted.sum())
    if tokens == 0:
        raise DataError("no text has two tokens or more: there is nothing to predict", param="training_file")
    return LanguageModelLoss(total / tokens, tokens)


# ----------------------------------------------------------------------------------- candidates


SCORE_OF_TASK: dict[str, ScoreName] = {"sequence_classification": "logme", "causal_lm": "perplexity"}

Scorer = Callable[[Candidate], dict[str, Any]]


def score_candidates(
    texts: Sequence[str],
    labels: Sequence[ScoringLabel] | None,
    candidates: Sequence[Candidate],
    task: TransferTask,
) -> list[dict[str, Any]]:
    """One JSON-safe result per candidate, best first; a candidate that cannot be scored comes last."""
    if task == "sequence_classification":
        if labels is None:
            raise DataError("LogME needs a label for every text", param="training_file")
        scorer: Scorer = partial(_logme_result, texts=texts, targets=scoring_targets(labels))
    else:
        scorer = partial(_perplexity_result, texts=texts)
    return rank([_score_one(candidate, scorer, task, len(texts)) for candidate in candidates])


def _score_one(candidate: Candidate, scorer: Scorer, task: TransferTask, examples: int) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = scorer(candidate)
    except (NoLanguageModelHead, OSError, ValueError) as error:
        # One candidate that cannot load or score must not cost the user the others' scores.
        logger.warning("transferability: candidate %s cannot be scored: %s", candidate.id, error)
        result = {"score": SCORE_OF_TASK[task], "value": None, "error": str(error)}
    result = {"model": candidate.id, "examples": examples} | result
    result["higher_is_better"] = result["score"] == "logme"
    result["seconds"] = round(time.perf_counter() - started, 3)
    logger.info("transferability of %s: %s", candidate.id, result)
    return result


def scoring_targets(labels: Sequence[ScoringLabel]) -> torch.Tensor:
    """LogME's target columns (n×k): one-hot classes, the regression target, or one 0/1 column per label."""
    if all(isinstance(label, tuple) for label in labels):
        sets: Sequence[tuple[Label, ...]] = labels  # type: ignore[assignment]
        ordered = _at_least_two(sort_labels({label for labels_of in sets for label in labels_of}))
        return torch.tensor([[float(label in labels_of) for label in ordered] for labels_of in sets])
    if any(isinstance(label, float) for label in labels):
        return torch.tensor([[float(label)] for label in labels], dtype=torch.float64)  # type: ignore[arg-type]
    classes: Sequence[Label] = labels  # type: ignore[assignment]
    indices = label_indices(classes)
    return torch.nn.functional.one_hot(indices, _class_count(indices))


def label_indices(labels: Sequence[Label]) -> torch.Tensor:
    """Class index of each label, the labels sorted as training sorts them; at least two classes."""
    ordered = _at_least_two(sort_labels(set(labels)))
    index = {label: position for position, label in enumerate(ordered)}
    return torch.tensor([index[label] for label in labels])


def _at_least_two(ordered: list[Label]) -> list[Label]:
    if len(ordered) < 2:
        raise DataError(
            f"LogME needs at least 2 distinct labels, found {len(ordered)}: {ordered}", param="training_file"
        )
    return ordered


def _logme_result(candidate: Candidate, texts: Sequence[str], targets: torch.Tensor) -> dict[str, Any]:
    features = mean_pooled_features(candidate.path, texts)
    return {
        "score": "logme",
        "value": logme_of_targets(features, targets),
        "feature_dim": features.shape[1],
    }


def _perplexity_result(candidate: Candidate, texts: Sequence[str]) -> dict[str, Any]:
    loss = language_model_loss(candidate.path, texts)
    return {
        "score": "perplexity",
        "value": loss.perplexity,
        "cross_entropy": loss.cross_entropy,
        "tokens": loss.tokens,
    }


def rank(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first (LogME: highest; perplexity: lowest), unscored last; each gets its 1-based `rank`."""
    scored = [r for r in results if r.get("value") is not None]
    unscored = [r for r in results if r.get("value") is None]
    scored.sort(key=lambda r: -r["value"] if r["higher_is_better"] else r["value"])
    ranked = []
    for position, result in enumerate(scored, start=1):
        ranked.append(result | {"rank": position})
    ranked.extend(result | {"rank": None} for result in unscored)
    return ranked


# ----------------------------------------------------------------------------------------- data


def read_scoring_data(
    path: Path, task: TransferTask, *, max_examples: int, seed: int = 0
) -> tuple[list[str], list[ScoringLabel] | None]:
    """The texts (and labels, for classification) to score on: at most `max_examples`, a seeded sample.

    Classification files give class labels, regression files their float targets, multi-label files
    each example's label tuple.
    """
    if task == "sequence_classification":
        examples = _sample(_labelled_examples(path), max_examples, seed)
        return [e.text for e in examples], [_scoring_label(e) for e in examples]
    return _sample(read_texts(path), max_examples, seed), None


def _labelled_examples(path: Path) -> list[Example | MultiLabelExample | RegressionExample]:
    data = read_data_file(path, param="training_file")
    if data.format not in FORMATS_BY_TASK["sequence_classification"]:
        raise DataError(
            f'LogME scores labelled lines ({{"text", "label"}} or {{"text", "labels"}}), '
            f"but the file is {data.format}",
            param="training_file",
        )
    return data.examples  # type: ignore[return-value]


def _scoring_label(example: Example | MultiLabelExample | RegressionExample) -> ScoringLabel:
    if isinstance(example, MultiLabelExample):
        return example.labels
    return example.value if isinstance(example, RegressionExample) else example.label


def _sample(items: list[Any], count: int, seed: int) -> list[Any]:
    # Sampled, not the first lines: a file sorted by label would otherwise show only one class.
    if len(items) <= count:
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), count))
    return [items[i] for i in keep]


def read_texts(path: Path, *, param: str = "training_file") -> list[str]:
    """Language-model text of each example: its text, prompt + completion, or its messages' contents.

    Read through tuning.data like training, so a file the API accepted scores, line errors included.
    """
    return [_example_text(example) for example in read_data_file(path, param=param).examples]


def _example_text(example: AnyExample) -> str:
    if isinstance(example, PromptCompletionExample):
        return example.prompt + example.completion
    if isinstance(example, ChatExample):
        return "\n".join(message.content for message in example.messages)
    return example.text
