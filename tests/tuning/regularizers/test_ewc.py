"""EWC: the diagonal Fisher of the pretrained weights on source texts, and Σ F·(θ−θ₀)² with it."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch.func import functional_call, jacrev

from tuning import Event, JobSpec, SpecError, run
from tuning.regularizers import RegularizerContext, make_regularizers
from tuning.regularizers.ewc import estimate_fisher
from tuning.spec import Regularizers
from tuning.task_model import TaskModel, load_classifier

# torch.func's jacrev runs CPU attention's backward without a batching rule: slower, not wrong.
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

CPU = torch.device("cpu")
TEXTS = ["a wonderful movie", "the plot was awful and boring", "ok"]

# The Fisher (autograd's backward) and the reference (torch.func's jacrev) are both float32 and sum in
# whatever order the CPU's kernels choose. A gradient element is a sum of products over at most 64
# terms here (width 32, feed-forward 64), so its rounding error is bounded by a few dozen eps of the
# largest gradient G, not of itself: g = 0 exactly (a key bias under softmax) comes out as ±1e-11.
# Squared, g² + 2gδ + δ² with |δ| ≤ ROUNDING·G; observed here: under 1 eps, with or without threads.
ROUNDING = 64 * torch.finfo(torch.float32).eps


def squared_scores_match(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> bool:
    """Every element of `actual` within float32 rounding of `expected`, for squared gradients."""
    largest = max(float(tensor.max()) for tensor in expected.values())  # G², the scale of every sum
    return all(
        bool(
            (
                (actual[name] - tensor).abs()
                <= 2 * ROUNDING * (tensor.clamp_min(0) * largest).sqrt() + ROUNDING**2 * largest
            ).all()
        )
        for name, tensor in expected.items()
    )


@pytest.fixture()
def classifier(tiny_bert_dir: Path) -> TaskModel:
    torch.manual_seed(0)
    classifier = load_classifier(tiny_bert_dir, ["negative", "neutral", "positive"], max_seq_length=32)
    with torch.no_grad():  # a confident head, so p(y|x) is far from uniform and the labels' gradients differ
        dict(classifier.model.named_parameters())["classifier.weight"].mul_(50.0)
    return classifier


def per_label_gradients(classifier: TaskModel, text: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """p(y|x), and the Jacobian of log p(·|x) by pretrained parameter (labels × shape), by torch.func."""
    model = classifier.model.eval()
    encoded = classifier.tokenizer(text, return_tensors="pt")
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    pretrained = {n: p.detach() for n, p in model.named_parameters() if n in classifier.pretrained}
    others = {n: p.detach() for n, p in model.named_parameters() if n not in classifier.pretrained}

    def log_probs(parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = functional_call(model, {**parameters, **others}, args=(), kwargs=inputs).logits[0]
        return torch.log_softmax(logits, dim=-1)

    return log_probs(pretrained).exp().detach(), jacrev(log_probs)(pretrained)


def test_penalty_matches_a_hand_computation() -> None:
    fisher = {"a.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}

    def deviations() -> Iterator[tuple[str, torch.Tensor]]:
        yield "a.weight", torch.tensor([[1.0, 0.0], [0.5, -1.0]])
        yield "b.weight", torch.tensor([5.0])  # no Fisher estimate: not penalised

    context = RegularizerContext(deviations, [], None, fisher)
    (regularizer,) = make_regularizers(
        Regularizers.model_validate({"ewc": {"weight": 2.0, "fisher_file": "f"}}), context
    )
    penalty = regularizer.penalty(torch.nn.Identity(), {}, torch.zeros(1, 2))
    assert (regularizer.name, regularizer.weight) == ("ewc", 2.0)
    torch.testing.assert_close(penalty, torch.tensor(1 * 1.0 + 2 * 0.0 + 3 * 0.25 + 4 * 1.0))


def test_penalty_gradient_is_twice_fisher_times_deviation() -> None:
    theta = torch.tensor([1.0, -2.0], requires_grad=True)
    fisher = {"w": torch.tensor([0.5, 3.0])}
    context = RegularizerContext(lambda: iter([("w", theta - torch.tensor([0.0, -1.0]))]), [], None, fisher)
    (regularizer,) = make_regularizers(
        Regularizers.model_validate({"ewc": {"weight": 1.0, "fisher_file": "f"}}), context
    )
    regularizer.penalty(torch.nn.Identity(), {}, torch.zeros(1, 2)).backward()
    assert theta.grad is not None
    torch.testing.assert_close(theta.grad, torch.tensor([2 * 0.5 * 1.0, 2 * 3.0 * -1.0]))


def test_exact_fisher_is_the_expected_squared_score(classifier: TaskModel) -> None:
    fisher, event = estimate_fisher(classifier, TEXTS, device=CPU, sample=False)

    expected: dict[str, torch.Tensor] = {}
    for text in TEXTS:
        p, jacobian = per_label_gradients(classifier, text)
        for name, rows in jacobian.items():
            weighted = torch.einsum("y,y...->...", p, rows.pow(2)) / len(TEXTS)
            expected[name] = expected.get(name, torch.zeros_like(weighted)) + weighted
    assert set(fisher) == set(expected)  # every pretrained parameter, no head, no buffer
    assert not any(name.startswith("classifier.") for name in fisher)
    assert squared_scores_match(fisher, expected)
    assert sum(float(f.sum()) for f in fisher.values()) > 0
    assert event.data["fisher_examples"] == 3
    assert event.data["fisher_parameters"] == sum(f.numel() for f in fisher.values())


def test_estimation_restores_the_model_as_it_found_it(classifier: TaskModel) -> None:
    model = classifier.model.train()
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    estimate_fisher(classifier, TEXTS, device=CPU)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert model.training and all(p.grad is None for p in model.parameters())


def test_a_sampled_label_gives_that_labels_squared_score(classifier: TaskModel) -> None:
    text = TEXTS[1]
    p, jacobian = per_label_gradients(classifier, text)
    candidates = [{name: rows[y].pow(2) for name, rows in jacobian.items()} for y in range(len(p))]
    fisher, _ = estimate_fisher(classifier, [text], device=CPU, seed=3)
    matches = [y for y, squared in enumerate(candidates) if squared_scores_match(fisher, squared)]
    assert len(matches) == 1  # one label was drawn, and its score alone was squared


def flat(fisher: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([fisher[name].flatten() for name in sorted(fisher)])


def test_sampling_averages_to_the_exact_fisher(classifier: TaskModel) -> None:
    text = TEXTS[1]
    p, jacobian = per_label_gradients(classifier, text)
    exact = flat(estimate_fisher(classifier, [text], device=CPU, sample=False)[0])
    sampled = flat(estimate_fisher(classifier, [text] * 120, device=CPU, seed=1)[0])

    def error(estimate: torch.Tensor) -> float:
        return float((estimate - exact).norm() / exact.norm())

    # Any single label's squared score is far from the expectation (here ≥ 0.5 relative error); the
    # average over 120 draws is close to it (≈ 0.1 expected), so the draws follow p(y|x).
    single_label = [
        error(flat({name: rows[y].pow(2) for name, rows in jacobian.items()})) for y in range(len(p))
    ]
    assert min(single_label) > 0.4
    assert error(sampled) < 0.25


def test_ewc_without_its_source_file_is_refused(
    tiny_spec: Callable[..., JobSpec],
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
    tmp_path: Path,
) -> None:
    spec = tiny_spec(method={"type": "bitfit"}).model_copy(
        update={"regularizers": Regularizers.model_validate({"ewc": {"weight": 1.0, "fisher_file": "f"}})}
    )
    with pytest.raises(SpecError) as caught:
        run(spec, tmp_path / "out", training_path=sentiment_files[0], model_dirs=model_dirs)
    assert caught.value.param == "regularizers.ewc.fisher_file"


def test_a_job_reports_the_fisher_cost_and_every_penalty_beside_the_task_loss(
    tiny_spec: Callable[..., JobSpec],
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
    tmp_path: Path,
) -> None:
    # BitFit: its biases are pretrained weights trained directly, so l2sp and ewc have deviations.
    regularizers = {
        "l2sp": {"weight": 0.1, "new_weight": 0.01},
        "kl": {"weight": 0.5, "temperature": 2.0},
        "ewc": {"weight": 100.0, "fisher_file": "file-train", "fisher_examples": 12},
    }
    spec = JobSpec.model_validate(
        tiny_spec(method={"type": "bitfit"}, epochs=2, logging_steps=2).model_dump()
        | {"regularizers": regularizers}
    )
    events: list[Event] = []
    training, validation = sentiment_files
    result = run(
        spec,
        tmp_path / "out",
        training_path=training,
        validation_path=validation,
        fisher_path=training,  # the source task is the training data itself
        model_dirs=model_dirs,
        on_event=events.append,
    )

    fisher_events = [e for e in events if "fisher_seconds" in e.data]
    assert len(fisher_events) == 1  # estimated once per job
    assert fisher_events[0].data["fisher_examples"] == 12 and fisher_events[0].data["fisher_seconds"] > 0
    metrics = [e.data for e in events if e.type == "metrics"]
    assert metrics and all(set(m["penalties"]) == {"l2sp", "l2sp_new", "kl", "ewc"} for m in metrics)
    assert all("train_loss" in m for m in metrics)
    last = metrics[-1]["penalties"]
    # θ−θ₀ and the KL start at exactly 0 (eval aside, dropout makes kl > 0 at once); all have moved.
    assert last["l2sp"] > 0 and last["ewc"] > 0 and last["kl"] > 0 and last["l2sp_new"] > 0
    json.dumps([e.data for e in events])  # events are stored as JSON by the worker
    assert result.steps == metrics[-1]["step"]
