"""A LoRA job's evaluations before its last step run folded (tuning.folded_evaluation); the one it
reports runs as its artifact does, and the frozen base is never written."""

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tuning import train
from tuning.events import Event
from tuning.fit import fit
from tuning.methods.lora.model import lora_layers
from tuning.spec import JobSpec


@pytest.fixture()
def folds_seen(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each of the job's evaluations ran folded, in order."""
    seen: list[bool] = []
    real: Callable[[nn.Module, bool], AbstractContextManager[None]] = train.folded

    def recording(model: nn.Module, enabled: bool = True) -> AbstractContextManager[None]:
        seen.append(enabled)
        return real(model, enabled)

    monkeypatch.setattr(train, "folded", recording)
    return seen


def test_a_lora_job_evaluates_folded_until_its_reported_evaluation(
    folds_seen: list[bool],
    tiny_spec: Callable[..., JobSpec],
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
    tiny_bert_dir: Path,
) -> None:
    training, validation = sentiment_files
    fitted = fit(
        tiny_spec(),  # 10 epochs
        training_path=training,
        validation_path=validation,
        model_dirs=model_dirs,
    )
    # Step 0 and the first nine epochs' ends folded; the tenth, the reported one, as the artifact runs.
    assert folds_seen == [True] * 10 + [False]
    assert fitted.job.metrics["val_accuracy"] >= fitted.job.metrics["initial_val_accuracy"] + 0.2

    # The reported loss is the artifact's: the trained model's own float32 forward, unfolded.
    rows = [json.loads(line) for line in validation.read_text().splitlines()]
    inputs = fitted.job.tokenizer([row["text"] for row in rows], padding=True, return_tensors="pt")
    targets = torch.tensor([list(fitted.job.labels).index(row["label"]) for row in rows])
    model = fitted.job.model
    layers = lora_layers(model)
    assert layers and all(layer.folded is None for layer in layers.values())  # nothing kept after
    with torch.inference_mode():
        loss = nn.functional.cross_entropy(model(**inputs).logits, targets).item()
    assert fitted.job.metrics["val_loss"] == pytest.approx(loss, rel=1e-5)

    # Folding never wrote into W: every adapted layer's base is the pretrained weight, bit for bit.
    pretrained = load_file(str(tiny_bert_dir / "model.safetensors"))
    for name, layer in layers.items():  # the checkpoint is a BertModel's: no "bert." prefix
        assert torch.equal(layer.base_layer.weight, pretrained[f"{name.removeprefix('bert.')}.weight"]), name


def test_step_losses_match_an_unfolded_twin(
    monkeypatch: pytest.MonkeyPatch,
    tiny_spec: Callable[..., JobSpec],
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
) -> None:
    """The same job with folding off: its evaluations agree with the folded ones to float32 rounding,
    and its weights are the same (folding touches nothing training reads)."""
    training, validation = sentiment_files

    def evaluated(folding: bool) -> tuple[dict[int, float], dict[str, torch.Tensor]]:
        monkeypatch.setattr(train, "evaluations_fold", lambda model, device: folding)
        events: list[Event] = []
        fitted = fit(
            tiny_spec(epochs=4),
            training_path=training,
            validation_path=validation,
            model_dirs=model_dirs,
            on_event=events.append,
        )
        losses = {e.data["step"]: e.data["val_loss"] for e in events if e.type == "eval"}
        trained = {n: p.detach().clone() for n, p in fitted.job.model.named_parameters() if p.requires_grad}
        return losses, trained

    (folded_losses, folded_weights), (plain_losses, plain_weights) = evaluated(True), evaluated(False)
    assert folded_losses.keys() == plain_losses.keys() and len(folded_losses) == 5
    for step, loss in folded_losses.items():
        assert loss == pytest.approx(plain_losses[step], rel=1e-5), step
    assert all(torch.equal(folded_weights[name], plain_weights[name]) for name in plain_weights)
