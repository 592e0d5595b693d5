"""JSONL data for sequence classification: one `{"text": ..., "label": ...}` object per line.

Imports no torch: the API validates every uploaded line with `validate_file`. Training reads the
same lines through `read_classification_file`, so a file that passed upload trains, and a file
given to `tuning.run` from a shell gets the same line-numbered errors.
"""

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuning.errors import DataError
from tuning.spec import Task

Label = str | int

EXPECTED_KEYS = ("text", "label")


@dataclass(frozen=True)
class Example:
    text: str
    label: Label
    line: int


@dataclass(frozen=True)
class FileReport:
    """What an upload holds: its example count and how many examples carry each label."""

    examples: int
    label_counts: dict[str, int]


def validate_file(
    path: Path, task: Task = "sequence_classification", *, param: str | None = None
) -> FileReport:
    """Check every line of `path`; DataError names the first bad line (1-based)."""
    if task != "sequence_classification":
        raise DataError(f"unsupported task {task!r}", param="task")
    counts: Counter[Label] = Counter(example.label for example in iter_examples(path, param=param))
    return FileReport(
        examples=sum(counts.values()),
        label_counts={str(label): counts[label] for label in sort_labels(counts)},
    )


def read_classification_file(path: Path, *, param: str = "training_file") -> list[Example]:
    """All examples of `path`, checked line by line like an upload."""
    return list(iter_examples(path, param=param))


def build_label_map(examples: Sequence[Example], *, param: str = "training_file") -> list[Label]:
    """Index → label: the training labels sorted (ints numerically), refusing fewer than two."""
    labels = sort_labels({example.label for example in examples})
    if len(labels) < 2:
        raise DataError(
            f"classification needs at least 2 distinct labels, found {len(labels)}: {labels}", param=param
        )
    return labels


def check_validation_labels(
    examples: Sequence[Example], labels: Sequence[Label], *, param: str = "validation_file"
) -> None:
    """Refuse a validation label the model cannot predict because training never showed it."""
    known = set(labels)
    for example in examples:
        if example.label not in known:
            raise DataError(
                f"label {example.label!r} never appears in the training file (its labels: {list(labels)})",
                line=example.line,
                param=param,
            )


def sort_labels(labels: Iterable[Label]) -> list[Label]:
    # Labels in one file share a type (iter_examples enforces it), so plain sorting is total.
    return sorted(labels)  # type: ignore[type-var]


def iter_examples(path: Path, *, param: str | None = None) -> Iterator[Example]:
    """Yield each line's example; raise DataError at the first line that breaks a rule."""
    first_blank: int | None = None
    label_type: tuple[type, int] | None = None  # the first label's type and its line
    line_number = 0
    with Path(path).open("rb") as lines:
        for line_number, raw in enumerate(lines, start=1):
            text = _decode(raw, line_number, param)
            if not text.strip():
                # Trailing blank lines are an editor's habit; a blank line between examples is a
                # hole that usually means a broken export, so it is refused.
                first_blank = first_blank or line_number
                continue
            if first_blank is not None:
                raise DataError("blank line between examples", line=first_blank, param=param)
            example = _parse_example(text, line_number, param)
            label_type = _check_label_type(example, label_type, param)
            yield example
    if label_type is None:
        raise DataError("no examples: the file is empty", param=param)


def _decode(raw: bytes, line: int, param: str | None) -> str:
    try:
        # utf-8-sig on the first line drops a byte-order mark that some editors write.
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"not valid UTF-8 (byte {error.start})", line=line, param=param) from None


def _parse_example(text: str, line: int, param: str | None) -> Example:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        reason = f"not valid JSON: {error.msg} (column {error.colno})"
        raise DataError(reason, line=line, param=param) from None
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {_json_type(record)}", line=line, param=param)
    unexpected = [key for key in record if key not in EXPECTED_KEYS]
    if unexpected:
        # Named, so a client who wrote "lable" learns which key is wrong.
        raise DataError(
            f"unexpected key(s) {', '.join(map(repr, unexpected))}; each line has only 'text' and 'label'",
            line=line,
            param=param,
        )
    return Example(_text(record, line, param), _label(record, line, param), line)


def _text(record: dict[str, object], line: int, param: str | None) -> str:
    if "text" not in record:
        raise DataError("missing 'text'", line=line, param=param)
    text = record["text"]
    if not isinstance(text, str):
        raise DataError(f"'text' must be a string, got {_json_type(text)}", line=line, param=param)
    if not text.strip():
        raise DataError("'text' is empty", line=line, param=param)
    return text


def _label(record: dict[str, object], line: int, param: str | None) -> Label:
    if "label" not in record:
        raise DataError("missing 'label'", line=line, param=param)
    label = record["label"]
    # bool is an int subclass in Python and floats are ambiguous as classes: both refused.
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise DataError(
            f"'label' must be a string or an integer, got {_json_type(label)}", line=line, param=param
        )
    if isinstance(label, str) and not label.strip():
        raise DataError("'label' is an empty string", line=line, param=param)
    return label


def _check_label_type(
    example: Example, first: tuple[type, int] | None, param: str | None
) -> tuple[type, int]:
    if first is None:
        return type(example.label), example.line
    first_type, first_line = first
    if type(example.label) is not first_type:
        raise DataError(
            f"label {example.label!r} is {_json_type(example.label)} but line {first_line}'s label is "
            f"{'an integer' if first_type is int else 'a string'}; use one type for all labels",
            line=example.line,
            param=param,
        )
    return first


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    if value is None:
        return "null"
    return names.get(type(value), "an object")
