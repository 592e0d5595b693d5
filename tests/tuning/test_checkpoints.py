"""Checkpoints written while training: which are kept, that each is the model of its step, and that a
new job started from one (`from_checkpoint`) starts where it left off."""

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.tuning.datasets import sentiment_lines, write_jsonl
from tuning import JobSpec, SpecError, load_artifact, predict_logits
from tuning.checkpoints import Checkpoint, writing_state
from tuning.fit import Fitted, fit
from tuning.run import run

MakeSpec = Callable[..., JobSpec]


def read_examples(path: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row["text"] for row in rows], [row["label"] for row in rows]


def validation_loss(checkpoint_dir: Path, model_dirs: list[Path], validation: Path) -> float:
    """The loaded checkpoint's mean cross-entropy on the validation file, computed from its logits."""
    loaded = load_artifact(checkpoint_dir, model_dirs, device=torch.device("cpu"))
    texts, labels = read_examples(validation)
    targets = torch.tensor([loaded.labels.index(label) for label in labels])
    return F.cross_entropy(predict_logits(loaded, texts), targets).item()


class Recorder:
    def __init__(self) -> None:
        self.checkpoints: list[Checkpoint] = []
        self.dropped: list[int] = []

    def __call__(self, checkpoint: Checkpoint, dropped: Sequence[int]) -> None:
        self.checkpoints.append(checkpoint)
        self.dropped.extend(dropped)


@pytest.fixture(scope="module")
def checkpointed(
    tmp_path_factory: pytest.TempPathFactory, sentiment_files: tuple[Path, Path], model_dirs: list[Path]
) -> tuple[Recorder, Path, Fitted]:
    """One epoch of 8 steps with a checkpoint (and an evaluation) every 2 steps, the newest 2 kept."""
    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-train",
            "validation_file": "file-validation",
            "method": {"type": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"]},
            "hyperparameters": {"epochs": 1, "batch_size": 8, "learning_rate": 2e-2, "eval_steps": 2},
            "checkpoints": {"every_steps": 2, "keep": 2},
        }
    )
    root = tmp_path_factory.mktemp("checkpointed") / "checkpoints"
    recorder = Recorder()
    fitted = fit(
        spec,
        training_path=sentiment_files[0],
        validation_path=sentiment_files[1],
        model_dirs=model_dirs,
        checkpoints_dir=root,
        on_checkpoint=recorder,
    )
    return recorder, root, fitted


def test_only_the_newest_checkpoints_are_kept(checkpointed: tuple[Recorder, Path, Fitted]) -> None:
    recorder, root, _ = checkpointed
    assert [c.step for c in recorder.checkpoints] == [2, 4, 6, 8]
    assert recorder.dropped == [2, 4]
    assert sorted(path.name for path in root.iterdir()) == ["step-00000006", "step-00000008"]
    assert recorder.checkpoints[-1].epoch == 1.0
    assert set(recorder.checkpoints[-1].files) == {path.name for path in (root / "step-00000008").iterdir()}


def test_each_kept_checkpoint_is_its_steps_model(
    checkpointed: tuple[Recorder, Path, Fitted], sentiment_files: tuple[Path, Path], model_dirs: list[Path]
) -> None:
    recorder, root, fitted = checkpointed
    by_step = {c.step: c for c in recorder.checkpoints}
    losses = {}
    for step in (6, 8):
        losses[step] = validation_loss(root / f"step-{step:08d}", model_dirs, sentiment_files[1])
        assert losses[step] == pytest.approx(by_step[step].metrics["val_loss"], abs=1e-4)
    assert abs(losses[6] - losses[8]) > 1e-3  # two different models, not the last one twice
    # The last checkpoint is the model fit() returns: same logits.
    last = load_artifact(root / "step-00000008", model_dirs, device=torch.device("cpu"))
    texts, _ = read_examples(sentiment_files[1])
    expected = predict_logits(last, texts)
    last.model = fitted.job.model
    assert torch.allclose(predict_logits(last, texts), expected, atol=1e-5)


def test_a_job_from_a_checkpoint_starts_where_it_left_off(
    checkpointed: tuple[Recorder, Path, Fitted],
    tiny_spec: MakeSpec,
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
) -> None:
    recorder, root, _ = checkpointed
    step_6 = next(c for c in recorder.checkpoints if c.step == 6)
    fresh = fit(
        tiny_spec(epochs=1),
        training_path=sentiment_files[0],
        validation_path=sentiment_files[1],
        model_dirs=model_dirs,
    )
    resumed = fit(
        tiny_spec(epochs=1),
        training_path=sentiment_files[0],
        validation_path=sentiment_files[1],
        model_dirs=model_dirs,
        start_from=root / "step-00000006",
    )
    assert resumed.job.metrics["initial_val_loss"] == pytest.approx(step_6.metrics["val_loss"], abs=1e-4)
    # Not the base's untrained head: a fresh job starts elsewhere (10× the tolerance above away).
    assert abs(fresh.job.metrics["initial_val_loss"] - step_6.metrics["val_loss"]) > 1e-3


def test_writing_leaves_the_models_modes_and_trainable_set_as_they_were() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Linear(2, 2))
    model.train()
    model[2].eval()  # a module a method keeps in eval mode while the rest trains
    first, frozen = model[0].weight, model[2].weight
    frozen.requires_grad_(False)  # as a gradual-unfreezing schedule leaves it mid-training
    with writing_state(model, [first, frozen]):
        assert not any(module.training for module in model.modules())
        assert frozen.requires_grad
    assert [module.training for module in model] == [True, True, False]
    assert model.training and first.requires_grad and not frozen.requires_grad


def test_a_checkpoint_mid_unfreezing_holds_the_methods_whole_trainable_set(
    sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    """At step 2 of a gradual unfreezing only the head trains yet; the checkpoint still holds every adapter
    (their random down-projections included), so a job started from it starts from the same model."""
    from safetensors import safe_open

    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-train",
            "method": {"type": "adapter"},
            "gradual_unfreeze": {"every": 2, "unit": "steps"},
            "hyperparameters": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-2},
            "checkpoints": {"every_steps": 2, "keep": 10},
        }
    )
    out_dir = tmp_path / "out"
    run(spec, out_dir, training_path=sentiment_files[0], model_dirs=model_dirs)

    def stored(folder: Path) -> set[str]:
        with safe_open(str(folder / "delta.safetensors"), framework="pt") as tensors:
            return set(tensors.keys())

    first = stored(tmp_path / "out-checkpoints" / "step-00000002")
    assert first == stored(out_dir)
    assert sum("adapter" in name for name in first) >= 4


def test_a_checkpoint_of_other_labels_is_refused(
    checkpointed: tuple[Recorder, Path, Fitted], tiny_spec: MakeSpec, model_dirs: list[Path], tmp_path: Path
) -> None:
    _, root, _ = checkpointed
    training = write_jsonl(
        tmp_path / "train.jsonl", sentiment_lines(16, seed=3, labels={"positive": "yes", "negative": "no"})
    )
    with pytest.raises(SpecError, match="labels") as caught:
        fit(
            tiny_spec(epochs=1),
            training_path=training,
            model_dirs=model_dirs,
            start_from=root / "step-00000006",
        )
    assert caught.value.param == "from_checkpoint"
