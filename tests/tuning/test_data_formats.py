"""The six line formats: each file is read in its own format, and each breaks with its line and reason."""

import json
from pathlib import Path
from typing import Any

import pytest

from tests.tuning.datasets import write_jsonl
from tuning.data import (
    ChatExample,
    Message,
    MultiLabelExample,
    PromptCompletionExample,
    RegressionExample,
    TextExample,
    read_classification_file,
    read_data_file,
    validate_file,
)
from tuning.errors import DataError

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
GOOD_LINES: dict[str, dict[str, Any]] = {
    "classification": {"text": "fine", "label": "positive"},
    "multi_label": {"text": "fine", "labels": ["a", "b"]},
    "regression": {"text": "fine", "label": 3.7},
    "text": {"text": "once upon a time"},
    "prompt_completion": {"prompt": "2+2=", "completion": "4"},
    "chat": CHAT,
}


def lines_of(*records: dict[str, Any]) -> list[str]:
    return [json.dumps(record) for record in records]


@pytest.mark.parametrize("data_format", list(GOOD_LINES))
def test_each_format_is_detected_from_its_lines(tmp_path: Path, data_format: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", lines_of(GOOD_LINES[data_format]) * 3)
    assert read_data_file(path).format == data_format
    assert validate_file(path).format == data_format


def test_examples_carry_their_fields_and_line(tmp_path: Path) -> None:
    def first(record: dict[str, Any]) -> object:
        return read_data_file(write_jsonl(tmp_path / "d.jsonl", lines_of(record))).examples[0]

    assert first(GOOD_LINES["multi_label"]) == MultiLabelExample("fine", ("a", "b"), 1)
    assert first(GOOD_LINES["regression"]) == RegressionExample("fine", 3.7, 1)
    assert first(GOOD_LINES["text"]) == TextExample("once upon a time", 1)
    assert first(GOOD_LINES["prompt_completion"]) == PromptCompletionExample("2+2=", "4", 1)
    assert first(CHAT) == ChatExample((Message("user", "hi"), Message("assistant", "hello")), 1)


def test_integer_labels_with_one_non_integer_make_a_regression_file(tmp_path: Path) -> None:
    lines = lines_of({"text": "a", "label": 3}, {"text": "b", "label": 4.5}, {"text": "c", "label": 1})
    data = read_data_file(write_jsonl(tmp_path / "d.jsonl", lines))
    assert data.format == "regression"
    assert [example.value for example in data.examples] == [3.0, 4.5, 1.0]  # type: ignore[union-attr]


def test_integer_labels_alone_are_classes(tmp_path: Path) -> None:
    lines = lines_of({"text": "a", "label": 3}, {"text": "b", "label": 1})
    assert read_data_file(write_jsonl(tmp_path / "d.jsonl", lines)).format == "classification"


def test_multi_label_counts_each_label_in_the_upload_report(tmp_path: Path) -> None:
    lines = lines_of(
        {"text": "a", "labels": ["x", "y"]}, {"text": "b", "labels": ["y"]}, {"text": "c", "labels": []}
    )
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", lines))
    assert (report.format, report.examples, report.label_counts) == ("multi_label", 3, {"x": 1, "y": 2})


def test_an_empty_completion_is_read_for_the_report_to_count(tmp_path: Path) -> None:
    data = read_data_file(write_jsonl(tmp_path / "d.jsonl", lines_of({"prompt": "p", "completion": ""})))
    assert data.examples == [PromptCompletionExample("p", "", 1)]


def test_classification_readers_refuse_other_formats_by_name(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", lines_of(GOOD_LINES["text"]))
    with pytest.raises(DataError, match="the file is text") as caught:
        read_classification_file(path, param="regularizers.ewc.fisher_file")
    assert caught.value.param == "regularizers.ewc.fisher_file"


BAD_LINES = [
    # (the format of lines 1–36, the bad line 37, what the error says)
    ("multi_label", {"text": "x", "labels": "a"}, "'labels' must be an array, got a string"),
    ("multi_label", {"text": "x", "labels": ["a", "a"]}, "lists a label twice"),
    ("multi_label", {"text": "x", "labels": ["a", 1]}, "mixes strings and integers"),
    ("multi_label", {"text": "x", "labels": [1]}, "use one type for all labels"),
    ("multi_label", {"text": "x", "labels": [None]}, "each of 'labels' must be a string or an integer"),
    ("multi_label", {"text": "x", "label": "a", "labels": ["a"]}, "not both"),
    ("regression", {"text": "x", "label": "high"}, "got a string"),
    ("text", {"text": ""}, "'text' is empty"),
    ("text", {"text": ["a"]}, "'text' must be a string, got an array"),
    ("text", {"text": "x", "label": "a"}, 'line 1 is a {"text"} example'),
    ("prompt_completion", {"prompt": "p"}, "missing 'completion'"),
    ("prompt_completion", {"completion": "c"}, "missing 'prompt'"),
    ("prompt_completion", {"prompt": "p", "completion": 4}, "'completion' must be a string, got an integer"),
    ("prompt_completion", {"prompt": "", "completion": "c"}, "'prompt' is empty"),
    ("prompt_completion", {"prompt": "p", "completion": "c", "system": "s"}, "'system'"),
    ("chat", {"messages": []}, "non-empty array"),
    ("chat", {"messages": "hi"}, "non-empty array"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ("chat", {"messages": [{"role": "robot", "content": "x"}]}, "is not one of"),
    ("chat", {"messages": [{"role": "assistant"}]}, "messages[0] is missing 'content'"),
    ("chat", {"messages": [{"role": "assistant", "content": 1}]}, "messages[0].content must be a string"),
    ("chat", {"messages": [{"role": "assistant", "content": "x", "name": "n"}]}, "'name'"),
    ("chat", {"messages": ["hello"]}, "messages[0] must be an object, got a string"),
    ("chat", {"text": "x"}, 'line 1 is a {"messages"} example'),
]


@pytest.mark.parametrize(("data_format", "bad", "reason"), BAD_LINES)
def test_a_bad_line_is_named_with_its_reason(
    tmp_path: Path, data_format: str, bad: dict[str, Any], reason: str
) -> None:
    good = json.dumps(GOOD_LINES[data_format])
    path = write_jsonl(tmp_path / "d.jsonl", [good] * 36 + [json.dumps(bad)] + [good] * 3)
    with pytest.raises(DataError) as caught:
        read_data_file(path, param="training_file")
    assert caught.value.line == 37, caught.value
    assert reason in caught.value.reason
    assert caught.value.param == "training_file"


def test_deeply_nested_json_is_a_line_error_not_a_crash(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ['{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"])
    with pytest.raises(DataError) as caught:
        read_data_file(path)
    assert caught.value.line == 1
