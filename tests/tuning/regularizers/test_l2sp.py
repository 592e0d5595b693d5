"""L2-SP: Σ‖θ−θ₀‖² over the pretrained weights a method changes, Σ‖θ‖² over the parameters it added."""

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from tuning.pretrained import PretrainedSnapshot
from tuning.regularizers import RegularizerContext, make_regularizers
from tuning.spec import Regularizers
from tuning.task_model import TaskModel, load_classifier

QUERY_BIAS = "bert.encoder.layer.0.attention.self.query.bias"
OUTPUT_BIAS = "bert.encoder.layer.1.output.dense.bias"
VALUE_WEIGHT = "bert.encoder.layer.1.attention.self.value.weight"  # changed "through a method's tensors"


@pytest.fixture()
def classifier(tiny_bert_dir: Path) -> TaskModel:
    torch.manual_seed(0)
    classifier = load_classifier(tiny_bert_dir, ["negative", "positive"], max_seq_length=32)
    parameters = dict(classifier.model.named_parameters())
    for name in (QUERY_BIAS, OUTPUT_BIAS):
        parameters[name].requires_grad_(True)  # as a BitFit-like method would
    return classifier


def context_for(classifier: TaskModel, method_delta: torch.Tensor | None = None) -> RegularizerContext:
    model = classifier.model
    snapshot = PretrainedSnapshot.take(model, classifier.pretrained)

    def deviations() -> Iterator[tuple[str, torch.Tensor]]:
        yield from snapshot.deviations(model)
        if method_delta is not None:
            yield VALUE_WEIGHT, method_delta

    new = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n not in classifier.pretrained]
    return RegularizerContext(deviations, new, None, None)


def penalties(
    classifier: TaskModel, context: RegularizerContext, **options: float
) -> dict[str, torch.Tensor]:
    chosen = make_regularizers(Regularizers.model_validate({"l2sp": options}), context)
    logits = torch.zeros(1, 2)
    return {r.name: r.penalty(classifier.model, {}, logits) for r in chosen}


def test_penalties_match_a_hand_computation(classifier: TaskModel) -> None:
    context = context_for(classifier, method_delta=torch.full((2, 2), 0.5))
    parameters = dict(classifier.model.named_parameters())
    with torch.no_grad():
        parameters[QUERY_BIAS][:3] += 0.5  # 3 × 0.5² = 0.75
        parameters[OUTPUT_BIAS][5] -= 2.0  # 2² = 4
        parameters["classifier.weight"].fill_(0.25)  # 2 × 32 values × 0.25² = 4
        parameters["classifier.bias"].copy_(torch.tensor([1.0, -2.0]))  # 1 + 4 = 5

    values = penalties(classifier, context, weight=0.1, new_weight=0.01)

    # θ−θ₀: 0.75 + 4 from the biases, 4 × 0.5² = 1 from the method's ΔW.
    torch.testing.assert_close(values["l2sp"], torch.tensor(5.75))
    torch.testing.assert_close(values["l2sp_new"], torch.tensor(9.0))


def test_gradient_pulls_toward_the_pretrained_value(classifier: TaskModel) -> None:
    context = context_for(classifier)
    query_bias = dict(classifier.model.named_parameters())[QUERY_BIAS]
    with torch.no_grad():
        query_bias[:3] += 0.5
    values = penalties(classifier, context, weight=1.0)
    values["l2sp"].backward()
    expected = torch.zeros_like(query_bias)
    expected[:3] = 1.0  # d/dθ (θ−θ₀)² = 2·(θ−θ₀)
    assert query_bias.grad is not None
    torch.testing.assert_close(query_bias.grad, expected)


def test_each_term_carries_its_own_weight_and_new_weight_zero_adds_no_term(classifier: TaskModel) -> None:
    context = context_for(classifier)
    both = make_regularizers(
        Regularizers.model_validate({"l2sp": {"weight": 3.0, "new_weight": 0.5}}), context
    )
    assert [(r.name, r.weight) for r in both] == [("l2sp", 3.0), ("l2sp_new", 0.5)]
    only = make_regularizers(Regularizers.model_validate({"l2sp": {"weight": 3.0}}), context)
    assert [(r.name, r.weight) for r in only] == [("l2sp", 3.0)]


def test_untouched_weights_cost_nothing(classifier: TaskModel) -> None:
    values = penalties(classifier, context_for(classifier), weight=1.0)
    assert values["l2sp"].item() == 0.0


def drift_after_training(classifier: TaskModel, weight: float) -> float:
    """‖θ−θ₀‖² of the trained biases after SGD steps on task loss + weight·l2sp."""
    model = copy.deepcopy(classifier.model)
    for name, parameter in model.named_parameters():
        if name.endswith(".bias") and name in classifier.pretrained:
            parameter.requires_grad_(True)  # every backbone bias, the pooler's too: they move visibly
    trained = copy.copy(classifier)
    trained.model = model
    context = context_for(trained)
    (regularizer,) = make_regularizers(Regularizers.model_validate({"l2sp": {"weight": weight}}), context)
    # lr·2·weight ≤ 1: the penalty's own step never overshoots θ₀, so plain SGD stays stable.
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    inputs = dict(
        classifier.tokenizer(["a wonderful movie", "awful and boring"], padding=True, return_tensors="pt")
    )
    labels = torch.tensor([1, 0])
    for _ in range(10):
        logits = model(**inputs).logits
        penalty = regularizer.penalty(model, inputs, logits)
        loss = nn.functional.cross_entropy(logits, labels) + regularizer.weight * penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(sum(d.detach().pow(2).sum() for _, d in context.deviations()))


def test_a_strong_penalty_keeps_the_weights_near_their_pretrained_values(classifier: TaskModel) -> None:
    classifier.model.eval()  # no dropout: the two runs differ only by the penalty
    weak, strong = drift_after_training(classifier, 1e-6), drift_after_training(classifier, 0.5)
    assert weak > 0
    assert strong < weak / 20
