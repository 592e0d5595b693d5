"""`tuning.run` as the worker calls it: what it refuses, and what it returns and writes."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.tuning.datasets import sentiment_lines, write_jsonl
from tuning import DataError, Event, JobSpec, ModelNotFound, SpecError, load_artifact, predict_logits, run

MakeSpec = Callable[..., JobSpec]


def test_unknown_base_model_is_refused_naming_the_known_ones(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    spec = tiny_spec().model_copy(update={"base_model": "no-such-model"})
    with pytest.raises(ModelNotFound, match="tiny-bert"):
        run(spec, tmp_path / "out", training_path=sentiment_files[0], model_dirs=model_dirs)


def test_bad_training_line_fails_with_line_and_param(
    tiny_spec: MakeSpec, model_dirs: list[Path], tmp_path: Path
) -> None:
    lines = sentiment_lines(40, seed=3)
    lines[36] = '{"text": "missing its label"}'
    training = write_jsonl(tmp_path / "train.jsonl", lines)
    with pytest.raises(DataError) as caught:
        run(tiny_spec(), tmp_path / "out", training_path=training, model_dirs=model_dirs)
    assert (caught.value.line, caught.value.param) == (37, "training_file")
    assert not (tmp_path / "out").exists()


def test_validation_label_unseen_in_training_names_its_line(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    lines = sentiment_lines(5, seed=4) + [json.dumps({"text": "meh", "label": "neutral"})]
    validation = write_jsonl(tmp_path / "validation.jsonl", lines)
    with pytest.raises(DataError, match="'neutral'") as caught:
        run(
            tiny_spec(),
            tmp_path / "out",
            training_path=sentiment_files[0],
            validation_path=validation,
            model_dirs=model_dirs,
        )
    assert (caught.value.line, caught.value.param) == (6, "validation_file")


def test_a_single_label_cannot_train(tiny_spec: MakeSpec, model_dirs: list[Path], tmp_path: Path) -> None:
    training = write_jsonl(
        tmp_path / "train.jsonl", sentiment_lines(8, seed=5, labels={"positive": 1, "negative": 1})
    )
    with pytest.raises(DataError, match="at least 2 distinct labels") as caught:
        run(tiny_spec(), tmp_path / "out", training_path=training, model_dirs=model_dirs)
    assert caught.value.param == "training_file"


def test_targets_matching_nothing_are_a_spec_error(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    spec = tiny_spec(method={"type": "lora", "target_modules": ["q_proj", "v_proj"]})
    with pytest.raises(SpecError, match="q_proj") as caught:
        run(spec, tmp_path / "out", training_path=sentiment_files[0], model_dirs=model_dirs)
    assert caught.value.param == "method.target_modules"
    assert "query" in caught.value.message


def test_integer_labels_travel_with_the_artifact(
    tiny_spec: MakeSpec, model_dirs: list[Path], tmp_path: Path
) -> None:
    names = {"negative": 10, "positive": 2}  # ints sort numerically: index 0 is 2, index 1 is 10
    training = write_jsonl(tmp_path / "train.jsonl", sentiment_lines(64, seed=6, labels=names))
    validation = write_jsonl(tmp_path / "validation.jsonl", sentiment_lines(24, seed=7, labels=names))
    out_dir = tmp_path / "out"
    result = run(
        tiny_spec(), out_dir, training_path=training, validation_path=validation, model_dirs=model_dirs
    )
    assert json.loads((out_dir / "deltatune.json").read_text())["labels"] == {"0": 2, "1": 10}

    loaded = load_artifact(str(out_dir), model_dirs)  # a plain string, as a user types it
    assert loaded.labels == [2, 10]
    scores = predict_logits(loaded, ["wonderful love excellent", "awful terrible boring"])
    assert [loaded.labels[i] for i in scores.argmax(dim=-1).tolist()] == [2, 10]
    assert result.metrics["val_accuracy"] >= 0.9


def test_without_validation_only_training_metrics_are_reported(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    events: list[Event] = []
    result = run(
        tiny_spec(epochs=1),
        tmp_path / "out",
        training_path=sentiment_files[0],
        model_dirs=model_dirs,
        on_event=events.append,
    )
    assert set(result.metrics) == {"train_loss", "train_seconds"}
    assert not [event for event in events if event.type == "eval"]
    assert result.steps == 8 and result.files
