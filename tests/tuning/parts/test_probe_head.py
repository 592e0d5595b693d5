"""head.initialization "probe" (LP-FT): the head's last linear layer starts as the L2-regularised linear
probe of the model's features, found exactly (a pooled head and a last-token one); the job says so;
"random", the default, keeps the model class's init; which jobs fit one. A resumed job does not fit it
again: tests/tuning/test_resume.py."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.tuning.test_frozen_prefix import train_job
from tests.tuning.test_resume import probe_events
from tuning import JobSpec
from tuning.build import prepare_classifier
from tuning.data import read_classification_file
from tuning.evaluate import evaluation_batches
from tuning.parts.head import logits_layer
from tuning.parts.head_start import PROBE_BATCH, starts_from_probe
from tuning.parts.probe_head import PROBE_L2, fit_probe_head, layer_inputs
from tuning.tasks.single_label import TASK as SINGLE_LABEL


def with_head(spec: JobSpec, **head: Any) -> JobSpec:
    return spec.model_copy(update={"head": spec.head.model_copy(update=head)})


@pytest.fixture(params=["tiny-bert", "tiny-gpt2"])
def classifier(
    request: pytest.FixtureRequest,
    tiny_spec: Callable[..., JobSpec],
    model_dirs: list[Path],
    tiny_gpt2_dir: Path,
    sentiment_files: tuple[Path, Path],
):
    """A pooled head (BERT's classifier) and a last-token one (GPT-2's score, on every position)."""
    spec = tiny_spec({"type": "bitfit"})
    examples = read_classification_file(sentiment_files[0])
    labels = sorted({example.label for example in examples})
    torch.manual_seed(0)
    task_model = prepare_classifier(spec, model_dirs[0] / request.param, labels)
    encoded = SINGLE_LABEL.encode(task_model, spec, examples, labels)
    return task_model, encoded


def test_the_fit_is_the_regularised_optimum_and_the_model_gives_its_logits(classifier) -> None:
    task_model, encoded = classifier
    model = task_model.model
    layer = model.get_submodule(logits_layer(model, task_model.head_modules, 2))
    cpu = torch.device("cpu")
    fitted = fit_probe_head(model, layer, encoded, loss=F.cross_entropy, device=cpu)
    features, targets = layer_inputs(model, layer, encoded, device=cpu, mixed_precision=False)

    weight = layer.weight.detach().double()
    has_bias = layer.bias is not None  # GPT-2's score has none
    bias = layer.bias.detach().double() if has_bias else torch.zeros(2, dtype=torch.float64)
    assert fitted.loss_after < fitted.loss_before
    # The model's own logits are the fitted layer's on the features the fit saw (same batches, same
    # order; GPT-2's: its last real token's): float32 arithmetic, so 1e-4 of the logits' size.
    logits: list[torch.Tensor] = []
    evaluation_batches(
        model, encoded, batch_size=PROBE_BATCH, device=cpu, visit=lambda out, _: logits.append(out)
    )
    torch.testing.assert_close(torch.cat(logits).double(), features @ weight.T + bias, atol=1e-4, rtol=1e-4)
    assert fitted.examples == len(encoded) and fitted.features == layer.in_features
    assert fitted.loss_after == pytest.approx(
        float(F.cross_entropy(features @ weight.T + bias, targets)), rel=1e-5
    )

    # Stationary: in the coordinates the fit ran in (centred where there is a bias to take the shift,
    # in units of the features' RMS), the objective's gradient is zero.
    mean = features.mean(0) if has_bias else torch.zeros(features.shape[1], dtype=torch.float64)
    scale = (features - mean).square().mean().sqrt()
    w = (weight * scale).requires_grad_(True)
    b = (bias + weight @ mean).requires_grad_(has_bias)
    objective = F.cross_entropy(((features - mean) / scale) @ w.T + b, targets) + PROBE_L2 * w.square().sum()
    objective.backward()
    assert w.grad is not None
    # float32 weights hold the float64 optimum to ~1e-7 relative: the gradient left is of that order.
    assert float(w.grad.abs().max()) < 1e-4
    if has_bias:
        assert b.grad is not None and float(b.grad.abs().max()) < 1e-4


def test_a_job_fits_its_head_first_and_starts_from_the_probe(
    tiny_spec: Callable[..., JobSpec],
    model_dirs: list[Path],
    sentiment_files: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    spec = tiny_spec({"type": "bitfit"}, epochs=1)
    _, probed, events = train_job(
        with_head(spec, initialization="probe"), tmp_path / "probe", sentiment_files, model_dirs
    )
    _, random, random_events = train_job(
        with_head(spec, initialization="random"), tmp_path / "random", sentiment_files, model_dirs
    )
    [event] = probe_events(events)
    assert event.data["probe_loss_after"] < event.data["probe_loss_before"]
    assert "linear probe" in event.message
    assert not probe_events(random_events)
    # The step-0 evaluation sees the probe's head: a lower validation loss than the random head's.
    assert probed["initial_val_loss"] < random["initial_val_loss"]


@pytest.mark.parametrize(
    ("head", "task", "from_checkpoint", "expected"),
    [
        ({}, "sequence_classification", None, False),  # the default: the model class's random init
        ({"initialization": "probe"}, "sequence_classification", None, True),
        ({"type": "mlp", "initialization": "probe"}, "sequence_classification", None, True),
        ({"initialization": "probe"}, "sequence_classification", "ckpt-1", False),
        ({}, "causal_lm", None, False),  # its head is the pretrained output layer: a head is refused
    ],
)
def test_which_jobs_start_from_a_probe(
    head: dict[str, Any], task: str, from_checkpoint: str | None, expected: bool
) -> None:
    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "task": task,
            "training_file": "file-train",
            "method": {"type": "bitfit"},
            "head": head,
            "from_checkpoint": from_checkpoint,
        }
    )
    assert starts_from_probe(spec) is expected
