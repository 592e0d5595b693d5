import json
from pathlib import Path

import pytest

from tests.tuning.datasets import sentiment_lines, write_jsonl
from tuning.data import (
    build_label_map,
    check_validation_labels,
    read_classification_file,
    validate_file,
)
from tuning.errors import DataError

GOOD = json.dumps({"text": "fine", "label": "positive"})


def file_with_line_37(tmp_path: Path, bad: str) -> Path:
    lines = [GOOD] * 36 + [bad] + [GOOD] * 5
    return write_jsonl(tmp_path / "data.jsonl", lines)


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"text": "x", "label": "a"', "not valid JSON"),
        ('["text", "label"]', "expected a JSON object, got an array"),
        ('"just a string"', "expected a JSON object, got a string"),
        ('{"label": "a"}', "missing 'text'"),
        ('{"text": "", "label": "a"}', "'text' is empty"),
        ('{"text": "   ", "label": "a"}', "'text' is empty"),
        ('{"text": 5, "label": "a"}', "'text' must be a string, got an integer"),
        ('{"text": "x"}', "missing 'label'"),
        ('{"text": "x", "label": 1.5}', "got a number"),
        ('{"text": "x", "label": true}', "got a boolean"),
        ('{"text": "x", "label": null}', "got null"),
        ('{"text": "x", "label": ""}', "empty string"),
        ('{"text": "x", "lable": "a"}', "'lable'"),
        ('{"text": "x", "label": "a", "weight": 2}', "'weight'"),
        ('{"text": "x", "label": 3}', "use one type for all labels"),
    ],
)
def test_bad_line_37_is_named_with_its_reason(tmp_path: Path, bad_line: str, reason: str) -> None:
    with pytest.raises(DataError) as caught:
        validate_file(file_with_line_37(tmp_path, bad_line))
    assert caught.value.line == 37
    assert reason in caught.value.reason
    assert str(caught.value).startswith("line 37: ")


def test_invalid_utf8_is_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes((GOOD + "\n").encode() * 36 + b'{"text": "caf\xe9", "label": "a"}\n')
    with pytest.raises(DataError, match="UTF-8") as caught:
        validate_file(path)
    assert caught.value.line == 37


def test_blank_line_between_examples_is_refused_but_trailing_ones_are_not(tmp_path: Path) -> None:
    trailing = write_jsonl(tmp_path / "trailing.jsonl", [GOOD, GOOD, "", "  "])
    assert validate_file(trailing).examples == 2

    middle = write_jsonl(tmp_path / "middle.jsonl", [GOOD, "", "  ", GOOD])
    with pytest.raises(DataError, match="blank line") as caught:
        validate_file(middle)
    assert caught.value.line == 2


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_a_file_without_examples_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match="no examples") as caught:
        validate_file(path)
    assert caught.value.line is None


def test_report_counts_examples_and_labels(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"t{i}", "label": label}) for i, label in enumerate([10, 2, 10, 2, 10])]
    report = validate_file(write_jsonl(tmp_path / "ints.jsonl", lines))
    assert report.examples == 5
    # Ints sort numerically: 2 before 10.
    assert list(report.label_counts.items()) == [("2", 2), ("10", 3)]


def test_byte_order_mark_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (GOOD + "\r\n").encode() * 2)
    assert validate_file(path).examples == 2


def test_read_keeps_text_label_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", sentiment_lines(5, seed=0))
    examples = read_classification_file(path)
    assert [example.line for example in examples] == [1, 2, 3, 4, 5]
    assert examples[0].text == json.loads(path.read_text().splitlines()[0])["text"]


def test_read_errors_carry_the_param(tmp_path: Path) -> None:
    path = file_with_line_37(tmp_path, "{oops")
    with pytest.raises(DataError) as caught:
        read_classification_file(path, param="training_file")
    assert (caught.value.param, caught.value.line) == ("training_file", 37)


def test_label_map_is_sorted_with_ints_numerically(tmp_path: Path) -> None:
    lines = [json.dumps({"text": "t", "label": label}) for label in [10, 9, 1, 9]]
    examples = read_classification_file(write_jsonl(tmp_path / "d.jsonl", lines))
    assert build_label_map(examples) == [1, 9, 10]

    words = [json.dumps({"text": "t", "label": label}) for label in ["b", "c", "a"]]
    assert build_label_map(read_classification_file(write_jsonl(tmp_path / "s.jsonl", words))) == [
        "a",
        "b",
        "c",
    ]


def test_training_needs_two_labels(tmp_path: Path) -> None:
    examples = read_classification_file(write_jsonl(tmp_path / "one.jsonl", [GOOD, GOOD]))
    with pytest.raises(DataError, match="at least 2 distinct labels") as caught:
        build_label_map(examples)
    assert caught.value.param == "training_file"


def test_a_validation_label_unseen_in_training_names_its_line(tmp_path: Path) -> None:
    lines = [json.dumps({"text": "t", "label": "positive"})] * 3 + [
        json.dumps({"text": "t", "label": "neutral"})
    ]
    validation = read_classification_file(write_jsonl(tmp_path / "v.jsonl", lines), param="validation_file")
    check_validation_labels(validation[:3], ["negative", "positive"])  # known labels pass
    with pytest.raises(DataError, match="'neutral' never appears") as caught:
        check_validation_labels(validation, ["negative", "positive"])
    assert (caught.value.line, caught.value.param) == (4, "validation_file")
