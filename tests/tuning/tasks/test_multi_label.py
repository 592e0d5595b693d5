"""multi_label end to end on the tiny BERT: multi-hot labels, training with LoRA and full fine-tuning
on topics with cue words, artifacts that we and PEFT reload, and bad files refused by line."""

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.tuning.datasets import write_jsonl
from tests.tuning.multi_regression_data import multi_label_lines
from tuning import RunResult, load_artifact, predict_logits, run
from tuning.data import MultiLabelExample, read_data_file
from tuning.errors import DataError
from tuning.fit import fit
from tuning.metrics import micro_f1
from tuning.spec import METRICS, JobSpec
from tuning.tasks import task_named

LORA: dict[str, Any] = {"type": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"]}
METHODS: dict[str, tuple[dict[str, Any], float]] = {"lora": (LORA, 2e-2), "full": ({"type": "full"}, 3e-3)}


def multi_spec(method: dict[str, Any], learning_rate: float) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-train",
            "validation_file": "file-validation",
            "method": method,
            "hyperparameters": {"epochs": 10, "batch_size": 8, "learning_rate": learning_rate},
        }
    )


@pytest.fixture(scope="module")
def topic_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("topics")
    return (
        write_jsonl(directory / "train.jsonl", multi_label_lines(64, seed=1)),
        write_jsonl(directory / "validation.jsonl", multi_label_lines(48, seed=2)),
    )


@pytest.fixture(scope="module", params=list(METHODS))
def trained(
    request: pytest.FixtureRequest,
    topic_files: tuple[Path, Path],
    tiny_bert_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path, RunResult]:
    method, learning_rate = METHODS[request.param]
    out_dir = tmp_path_factory.mktemp(f"multi-{request.param}")
    result = run(
        multi_spec(method, learning_rate),
        out_dir,
        training_path=topic_files[0],
        validation_path=topic_files[1],
        model_dirs=[tiny_bert_dir.parent],
    )
    return request.param, out_dir, result


def test_labels_become_one_float_per_label(tiny_bert_dir: Path) -> None:
    task = task_named("multi_label")
    spec = multi_spec(LORA, 2e-2).model_copy(update={"problem_type": "multi_label"})
    labels = ["food", "music", "sport"]
    task_model = task.load(spec, tiny_bert_dir, labels)
    assert task_model.model.config.problem_type == "multi_label_classification"
    assert task_model.model.config.num_labels == 3
    examples = [MultiLabelExample("pizza and a song", ("food", "music"), 1), MultiLabelExample("the", (), 2)]
    encoded = task.encode(task_model, spec, examples, labels)
    assert encoded.label_kind == "multi_hot"
    assert encoded.labels == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]


def test_training_raises_micro_f1_and_lowers_the_loss(trained: tuple[str, Path, RunResult]) -> None:
    name, _, result = trained
    metrics = result.metrics
    print(name, {key: round(value, 3) for key, value in metrics.items() if "val_" in key})
    assert {key.removeprefix("val_") for key in metrics if key.startswith("val_")} == set(
        METRICS["multi_label"]
    )
    assert metrics["val_loss"] < 0.8 * metrics["initial_val_loss"]
    assert metrics["val_micro_f1"] > metrics["initial_val_micro_f1"] + 0.2
    assert metrics["val_macro_f1"] > metrics["initial_val_macro_f1"] + 0.2
    assert metrics["val_exact_match"] > metrics["initial_val_exact_match"] + 0.3


def test_reloaded_artifact_reproduces_the_reported_micro_f1(
    trained: tuple[str, Path, RunResult], topic_files: tuple[Path, Path], tiny_bert_dir: Path
) -> None:
    _, out_dir, result = trained
    validation: list[MultiLabelExample] = read_data_file(topic_files[1]).examples  # type: ignore[assignment]
    loaded = load_artifact(out_dir, [tiny_bert_dir.parent])
    assert loaded.labels == ["food", "music", "sport"]
    logits = predict_logits(loaded, [example.text for example in validation])
    gold = torch.tensor([[label in example.labels for label in loaded.labels] for example in validation])
    assert micro_f1(logits > 0, gold) == pytest.approx(result.metrics["val_micro_f1"])


@pytest.mark.parametrize("trained", ["lora"], indirect=True)  # the method whose layout is PEFT's
def test_peft_reloads_the_lora_artifact_with_our_logits(
    trained: tuple[str, Path, RunResult], tiny_bert_dir: Path
) -> None:
    _, out_dir, _ = trained
    texts = ["football and a song", "the soup was cold", "we went there"]
    ours = predict_logits(load_artifact(out_dir, [tiny_bert_dir.parent]), texts)
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=3, problem_type="multi_label_classification"
    )
    model = PeftModel.from_pretrained(base, out_dir).eval()
    inputs = AutoTokenizer.from_pretrained(tiny_bert_dir)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"text": "pizza", "labels": "food"}', "must be an array"),
        ('{"text": "pizza", "labels": ["food", "food"]}', "a label twice"),
        ('{"text": "pizza", "labels": ["food", 3]}', "mixes strings and integers"),
    ],
)
def test_a_bad_training_line_is_refused_by_line(
    bad_line: str, message: str, topic_files: tuple[Path, Path], tiny_bert_dir: Path, tmp_path: Path
) -> None:
    lines = multi_label_lines(6, seed=3)
    lines.insert(4, bad_line)
    with pytest.raises(DataError, match=message) as refused:
        fit(
            multi_spec(LORA, 2e-2),
            training_path=write_jsonl(tmp_path / "train.jsonl", lines),
            validation_path=topic_files[1],
            model_dirs=[tiny_bert_dir.parent],
        )
    assert (refused.value.line, refused.value.param) == (5, "training_file")


def test_a_validation_label_unseen_in_training_is_refused_by_line(
    topic_files: tuple[Path, Path], tiny_bert_dir: Path, tmp_path: Path
) -> None:
    lines = multi_label_lines(6, seed=4) + ['{"text": "a film", "labels": ["cinema", "food"]}']
    with pytest.raises(DataError, match="'cinema' never appears in the training file") as refused:
        fit(
            multi_spec(LORA, 2e-2),
            training_path=topic_files[0],
            validation_path=write_jsonl(tmp_path / "validation.jsonl", lines),
            model_dirs=[tiny_bert_dir.parent],
        )
    assert (refused.value.line, refused.value.param) == (7, "validation_file")


def test_a_validation_file_of_another_format_is_refused(
    topic_files: tuple[Path, Path], tiny_bert_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match="the file is classification") as refused:
        fit(
            multi_spec(LORA, 2e-2),
            training_path=topic_files[0],
            validation_path=write_jsonl(
                tmp_path / "validation.jsonl", ['{"text": "pizza", "label": "food"}']
            ),
            model_dirs=[tiny_bert_dir.parent],
        )
    assert refused.value.param == "validation_file"
