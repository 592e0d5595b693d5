"""regression end to end on the tiny BERT: a target the text determines (its count of cue words),
training with LoRA and full fine-tuning, integer labels read as targets, artifacts that we and PEFT
reload, and bad files refused by line."""

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.tuning.datasets import sentiment_lines, write_jsonl
from tests.tuning.multi_regression_data import regression_lines
from tuning import RunResult, load_artifact, predict_logits, run
from tuning.data import RegressionExample, read_data_file
from tuning.errors import DataError, SpecError
from tuning.events import Event
from tuning.fit import fit
from tuning.metrics import r2
from tuning.spec import METRICS, JobSpec
from tuning.tasks import task_for, task_named

LORA: dict[str, Any] = {"type": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"]}
# (method, learning rate, epochs): sized so that r2 ends well above 0.5 in a few seconds.
METHODS: dict[str, tuple[dict[str, Any], float, int]] = {
    "lora": (LORA, 3e-2, 20),
    "full": ({"type": "full"}, 5e-3, 10),
}


def regression_spec(method: dict[str, Any], learning_rate: float, epochs: int = 1, **fields: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-train",
            "validation_file": "file-validation",
            "method": method,
            "hyperparameters": {"epochs": epochs, "batch_size": 8, "learning_rate": learning_rate},
        }
        | fields
    )


@pytest.fixture(scope="module")
def count_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("counts")
    return (
        write_jsonl(directory / "train.jsonl", regression_lines(96, seed=1)),
        write_jsonl(directory / "validation.jsonl", regression_lines(48, seed=2)),
    )


@pytest.fixture(scope="module", params=list(METHODS))
def trained(
    request: pytest.FixtureRequest,
    count_files: tuple[Path, Path],
    tiny_bert_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path, RunResult]:
    out_dir = tmp_path_factory.mktemp(f"regression-{request.param}")
    result = run(
        regression_spec(*METHODS[request.param]),
        out_dir,
        training_path=count_files[0],
        validation_path=count_files[1],
        model_dirs=[tiny_bert_dir.parent],
    )
    return request.param, out_dir, result


def test_the_head_has_one_output_and_labels_are_values(tiny_bert_dir: Path) -> None:
    task = task_named("regression")
    spec = regression_spec(LORA, 3e-2, problem_type="regression")
    task_model = task.load(spec, tiny_bert_dir, [])
    assert task_model.model.config.problem_type == "regression"
    assert task_model.model.config.num_labels == 1
    encoded = task.encode(
        task_model, spec, [RegressionExample("great", 1.0, 1), RegressionExample("a", 0.5, 2)], []
    )
    assert (encoded.label_kind, encoded.labels) == ("value", [1.0, 0.5])


def test_training_lowers_mse_and_explains_the_variance(trained: tuple[str, Path, RunResult]) -> None:
    name, _, result = trained
    metrics = result.metrics
    print(name, {key: round(value, 3) for key, value in metrics.items() if "val_" in key})
    assert {key.removeprefix("val_") for key in metrics if key.startswith("val_")} == set(
        METRICS["regression"]
    )
    assert metrics["val_loss"] == metrics["val_mse"]
    assert metrics["val_mse"] < 0.2 * metrics["initial_val_mse"]
    assert metrics["val_r2"] > 0.5


def test_reloaded_artifact_reproduces_the_reported_r2(
    trained: tuple[str, Path, RunResult], count_files: tuple[Path, Path], tiny_bert_dir: Path
) -> None:
    _, out_dir, result = trained
    validation: list[RegressionExample] = read_data_file(count_files[1]).examples  # type: ignore[assignment]
    loaded = load_artifact(out_dir, [tiny_bert_dir.parent])
    assert loaded.labels == []
    logits = predict_logits(loaded, [example.text for example in validation])
    assert logits.shape == (len(validation), 1)
    targets = torch.tensor([example.value for example in validation])
    assert r2(logits.squeeze(-1), targets) == pytest.approx(result.metrics["val_r2"], abs=1e-6)


@pytest.mark.parametrize("trained", ["lora"], indirect=True)  # the method whose layout is PEFT's
def test_peft_reloads_the_lora_artifact_with_our_logits(
    trained: tuple[str, Path, RunResult], tiny_bert_dir: Path
) -> None:
    _, out_dir, _ = trained
    texts = ["great great love", "the day was", "excellent then wonderful"]
    ours = predict_logits(load_artifact(out_dir, [tiny_bert_dir.parent]), texts)
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=1, problem_type="regression"
    )
    model = PeftModel.from_pretrained(base, out_dir).eval()
    inputs = AutoTokenizer.from_pretrained(tiny_bert_dir)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_integer_class_labels_are_targets_when_the_spec_says_regression(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ratings.jsonl", regression_lines(8, seed=5, integer=True))
    data = read_data_file(path)
    assert data.format == "classification"
    spec = regression_spec(LORA, 3e-2, problem_type="regression")
    task = task_for(spec, data.format)
    assert task.kind == "regression"
    checked = task.check_data(data, data)
    assert checked.labels == []
    assert [example.value for example in checked.train] == [float(e.label) for e in data.examples]  # type: ignore[union-attr]


def test_string_class_labels_cannot_be_targets(tiny_bert_dir: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "words.jsonl", sentiment_lines(8, seed=6))
    with pytest.raises(DataError, match="needs a number") as refused:
        fit(
            regression_spec(LORA, 3e-2, problem_type="regression", validation_file=None),
            training_path=path,
            model_dirs=[tiny_bert_dir.parent],
        )
    assert (refused.value.line, refused.value.param) == (1, "training_file")


def test_a_number_among_string_labels_is_refused_by_line(tiny_bert_dir: Path, tmp_path: Path) -> None:
    lines = sentiment_lines(6, seed=7)
    lines.insert(3, '{"text": "it was fine", "label": 3.7}')
    with pytest.raises(DataError, match="must be a string or an integer") as refused:
        fit(
            regression_spec(LORA, 3e-2, validation_file=None),
            training_path=write_jsonl(tmp_path / "train.jsonl", lines),
            model_dirs=[tiny_bert_dir.parent],
        )
    assert (refused.value.line, refused.value.param) == (4, "training_file")


def test_a_string_among_regression_targets_is_refused_by_line(tiny_bert_dir: Path, tmp_path: Path) -> None:
    lines = regression_lines(6, seed=8)
    lines.insert(2, '{"text": "great", "label": "high"}')
    with pytest.raises(DataError) as refused:
        fit(
            regression_spec(LORA, 3e-2, validation_file=None),
            training_path=write_jsonl(tmp_path / "train.jsonl", lines),
            model_dirs=[tiny_bert_dir.parent],
        )
    assert (refused.value.line, refused.value.param) == (3, "training_file")


def test_kl_is_refused_because_one_output_has_no_class_distribution(
    count_files: tuple[Path, Path], tiny_bert_dir: Path
) -> None:
    spec = regression_spec(LORA, 3e-2, regularizers={"kl": {"weight": 1.0}})
    with pytest.raises(SpecError, match="a regression job has none") as refused:
        fit(spec, training_path=count_files[0], model_dirs=[tiny_bert_dir.parent])
    assert refused.value.param == "regularizers.kl"


def test_early_stopping_keeps_the_evaluation_with_the_highest_r2(
    count_files: tuple[Path, Path], tiny_bert_dir: Path
) -> None:
    method, learning_rate, _ = METHODS["lora"]
    spec = regression_spec(method, learning_rate, 6, early_stopping={"metric": "r2", "patience": 2})
    spec = spec.model_copy(
        update={"hyperparameters": spec.hyperparameters.model_copy(update={"eval_steps": 6})}
    )
    events: list[Event] = []
    fitted = fit(
        spec,
        training_path=count_files[0],
        validation_path=count_files[1],
        model_dirs=[tiny_bert_dir.parent],
        on_event=events.append,
    )
    evaluations = [event.data for event in events if event.type == "eval" and event.data["step"] > 0]
    best = max(evaluations, key=lambda data: data["val_r2"])
    assert len(evaluations) > 2
    # The events' evaluations ran folded (tuning.folded_evaluation), the reported one as the artifact
    # runs: the same weights, float32 rounding apart.
    assert fitted.job.metrics["val_r2"] == pytest.approx(best["val_r2"], rel=1e-5)
    assert fitted.job.metrics["best_step"] == best["step"]
