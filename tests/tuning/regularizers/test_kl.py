"""KL toward the pretrained outputs: T²·KL(p₀ ‖ p_θ) on the same batch, zero while the method is identity."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from tuning.build import apply_spec_method
from tuning.regularizers import Regularizer, RegularizerContext, make_regularizers
from tuning.regularizers.kl import tempered_kl
from tuning.spec import JobSpec, Regularizers
from tuning.task_model import TaskModel, load_classifier

TEXTS = ["a wonderful movie", "the plot was awful and boring", "ok", "really great story"]


@pytest.fixture()
def classifier(tiny_bert_dir: Path) -> TaskModel:
    torch.manual_seed(0)
    return load_classifier(tiny_bert_dir, ["negative", "neutral", "positive"], max_seq_length=32)


def batch_of(classifier: TaskModel) -> dict[str, torch.Tensor]:
    batch = dict(classifier.tokenizer(TEXTS, padding=True, return_tensors="pt"))
    batch.pop("token_type_ids")  # training batches carry ids and mask only
    batch["labels"] = torch.tensor([2, 0, 1, 2])  # present in training batches; must not reach the model
    return batch


def kl_regularizer(reference: nn.Module, temperature: float) -> Regularizer:
    context = RegularizerContext(lambda: iter(()), [], reference, None)
    spec = Regularizers.model_validate({"kl": {"weight": 0.3, "temperature": temperature}})
    (regularizer,) = make_regularizers(spec, context)
    assert (regularizer.name, regularizer.weight) == ("kl", 0.3)
    return regularizer


def by_hand(reference_logits: torch.Tensor, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · (1/B) Σ_b Σ_c p log(p/q), written out."""
    p = torch.softmax(reference_logits / temperature, dim=-1)
    q = torch.softmax(logits / temperature, dim=-1)
    return temperature**2 * (p * (p.log() - q.log())).sum() / len(p)


def test_formula_matches_a_hand_computation() -> None:
    reference = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    logits = torch.tensor([[0.0, 1.0, 0.0], [3.0, -2.0, 1.0]])
    for temperature in (1.0, 2.0, 0.5):
        torch.testing.assert_close(
            tempered_kl(reference, logits, temperature), by_hand(reference, logits, temperature)
        )
    # Two rows whose distributions agree cost nothing, whatever their logits' offset.
    assert tempered_kl(reference, reference + 7.0, 2.0).abs().item() < 1e-6


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_penalty_compares_with_the_frozen_reference_on_the_same_batch(
    classifier: TaskModel, temperature: float
) -> None:
    model = classifier.model.eval()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        model.classifier.weight.add_(torch.randn_like(model.classifier.weight))  # the student moved
    batch = batch_of(classifier)
    regularizer = kl_regularizer(reference, temperature)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits

    penalty = regularizer.penalty(model, batch, logits)

    with torch.no_grad():
        expected = by_hand(reference(**inputs).logits, logits, temperature)
    assert expected.item() > 1e-3  # the test can tell a penalty from none
    torch.testing.assert_close(penalty, expected)
    penalty.backward()  # the gradient reaches the student only
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in reference.parameters())


def test_zero_at_the_start_for_a_method_that_is_identity_at_init(classifier: TaskModel) -> None:
    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-train",
            "method": {
                "type": "lora",
                "r": 4,
                "alpha": 8,
                "dropout": 0.0,
                "target_modules": ["query", "value"],
            },
            "regularizers": {"kl": {"weight": 1.0, "temperature": 2.0}},
        }
    )
    reference = copy.deepcopy(classifier.model)  # as run.py takes it: before the method
    apply_spec_method(spec, classifier)
    model = classifier.model.eval()  # dropout off
    batch = batch_of(classifier)
    regularizer = kl_regularizer(reference, 2.0)
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits

    assert regularizer.penalty(model, batch, logits).item() == 0.0
    assert regularizer.penalty(model, batch, logits + torch.tensor([1.0, 0.0, 0.0])).item() > 0


def test_tokens_a_method_adds_reach_the_reference_as_initialised(classifier: TaskModel) -> None:
    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-train",
            "method": {"type": "input_adapter", "new_tokens": ["covid19", "mrna"]},
            "regularizers": {"kl": {"weight": 1.0}},
        }
    )
    reference = copy.deepcopy(classifier.model)
    apply_spec_method(spec, classifier)
    model = classifier.model.eval()
    batch = dict(classifier.tokenizer(["covid19 mrna was awful", "great"], padding=True, return_tensors="pt"))
    batch.pop("token_type_ids")
    assert int(batch["input_ids"].max()) >= reference.get_input_embeddings().num_embeddings  # type: ignore[operator]
    regularizer = kl_regularizer(reference, 1.0)

    assert regularizer.penalty(model, batch, model(**batch).logits).item() == pytest.approx(0.0, abs=1e-6)
