"""Early stopping on a run whose validation loss gets worse (learning rate far too high): it stops
before the last epoch and publishes the best evaluation's weights and metrics, not the last ones."""

import json
from pathlib import Path

import pytest
import torch

from tuning import Event, JobSpec, load_artifact, predict_logits, run


def test_a_run_that_gets_worse_stops_and_publishes_its_best_evaluation(
    sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-train",
            "validation_file": "file-validation",
            "method": {"type": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"]},
            "hyperparameters": {"epochs": 10, "batch_size": 8, "learning_rate": 0.3},
            "early_stopping": {"metric": "loss", "patience": 2},
            "checkpoints": {"keep": 100},  # one per epoch, to compare the published weights with
        }
    )
    events: list[Event] = []
    out_dir = tmp_path / "out"
    result = run(
        spec,
        out_dir,
        training_path=sentiment_files[0],
        validation_path=sentiment_files[1],
        model_dirs=model_dirs,
        on_event=events.append,
    )

    evaluations = {e.data["step"]: e.data for e in events if e.type == "eval" and e.data["step"] > 0}
    best_step = min(evaluations, key=lambda step: evaluations[step]["val_loss"])
    assert result.steps < 10 * 8  # 64 examples in batches of 8: stopped before the last epoch
    assert max(evaluations) == result.steps and best_step < result.steps  # it had got worse since
    assert result.metrics["best_step"] == best_step
    published = {name: value for name, value in result.metrics.items() if name.startswith("val_")}
    # The events' evaluations ran folded (tuning.folded_evaluation), the published one as the artifact
    # runs: the best step's weights, float32 rounding apart.
    assert published == pytest.approx({name: evaluations[best_step][name] for name in published}, rel=1e-5)
    assert published["val_loss"] < evaluations[result.steps]["val_loss"]
    assert (
        json.loads((out_dir / "deltatune.json").read_text())["metrics"]["val_loss"] == published["val_loss"]
    )

    # The artifact holds the best step's weights: its logits are those of that step's checkpoint.
    texts = [json.loads(line)["text"] for line in sentiment_files[1].read_text().splitlines()]
    cpu = torch.device("cpu")
    artifact = predict_logits(load_artifact(out_dir, model_dirs, device=cpu), texts)
    checkpoints = out_dir.with_name("out-checkpoints")
    at_best = predict_logits(
        load_artifact(checkpoints / f"step-{best_step:08d}", model_dirs, device=cpu), texts
    )
    at_last = predict_logits(
        load_artifact(checkpoints / f"step-{result.steps:08d}", model_dirs, device=cpu), texts
    )
    assert torch.allclose(artifact, at_best, atol=1e-5)
    assert not torch.allclose(artifact, at_last, atol=1e-3)
