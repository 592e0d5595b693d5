"""Reading a JSONL data file: each line parsed into its format's example, every rule checked.

Imports no torch: the API validates every uploaded line with the same code that training reads
them with, so a file that passed upload trains, and a file given to `tuning.run` from a shell gets
the same line-numbered errors.
"""

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuning.data.examples import (
    CHAT_ROLES,
    AnyExample,
    ChatExample,
    Example,
    Message,
    MultiLabelExample,
    PromptCompletionExample,
    RegressionExample,
    TextExample,
)
from tuning.errors import DataError
from tuning.spec import DataFormat

# The key set that names each format. {"text", "label"} is classification or regression: the file
# decides (any non-integer number makes it regression), see _settle_labelled.
KEYS: dict[frozenset[str], str] = {
    frozenset({"text", "label"}): "labelled",
    frozenset({"text", "labels"}): "multi_label",
    frozenset({"text"}): "text",
    frozenset({"prompt", "completion"}): "prompt_completion",
    frozenset({"messages"}): "chat",
}
KNOWN_KEYS = frozenset().union(*KEYS)
SHAPES = '{"text", "label"}, {"text", "labels"}, {"text"}, {"prompt", "completion"} or {"messages"}'


@dataclass(frozen=True)
class DataFile:
    format: DataFormat
    examples: list[AnyExample]


def read_data_file(path: Path, *, param: str | None = None) -> DataFile:
    """Every example of `path`; DataError names the first bad line (1-based) and `param`."""
    shape: str | None = None
    first_line = 0
    records: list[tuple[int, dict[str, Any]]] = []
    for line, record in _records(path, param):
        line_shape = _shape(record, line, param)
        if shape is None:
            shape, first_line = line_shape, line
        elif line_shape != shape:
            missing = _keys_of(shape) - frozenset(record)
            if missing and frozenset(record) < _keys_of(shape):
                raise DataError(f"missing {', '.join(map(repr, sorted(missing)))}", line=line, param=param)
            raise DataError(
                f"this line is {_NAMES[line_shape]} but line {first_line} is {_NAMES[shape]}; "
                "a file holds one format",
                line=line,
                param=param,
            )
        records.append((line, record))
    if shape is None:
        raise DataError("no examples: the file is empty", param=param)
    if shape == "labelled":
        return _settle_labelled(records, param)
    parse = _PARSERS[shape]
    examples = [parse(record, line, param) for line, record in records]
    if shape == "multi_label":
        multi: list[MultiLabelExample] = examples  # type: ignore[assignment]
        _check_one_label_type([(label, example.line) for example in multi for label in example.labels], param)
    return DataFile(shape, examples)  # type: ignore[arg-type]


def _keys_of(shape: str) -> frozenset[str]:
    return next(keys for keys, name in KEYS.items() if name == shape)


_NAMES = {
    "labelled": 'a {"text", "label"} example',
    "multi_label": 'a {"text", "labels"} example',
    "text": 'a {"text"} example',
    "prompt_completion": 'a {"prompt", "completion"} example',
    "chat": 'a {"messages"} example',
}


def _records(path: Path, param: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
    first_blank: int | None = None
    with Path(path).open("rb") as lines:
        for line, raw in enumerate(lines, start=1):
            text = _decode(raw, line, param)
            if not text.strip():
                # Trailing blank lines are an editor's habit; a blank line between examples is a
                # hole that usually means a broken export, so it is refused.
                first_blank = first_blank or line
                continue
            if first_blank is not None:
                raise DataError("blank line between examples", line=first_blank, param=param)
            yield line, _parse_json(text, line, param)


def _decode(raw: bytes, line: int, param: str | None) -> str:
    try:
        # utf-8-sig on the first line drops a byte-order mark that some editors write.
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"not valid UTF-8 (byte {error.start})", line=line, param=param) from None


def _parse_json(text: str, line: int, param: str | None) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        reason = f"not valid JSON: {error.msg} (column {error.colno})"
        raise DataError(reason, line=line, param=param) from None
    except RecursionError:
        raise DataError("not valid JSON: nested too deeply", line=line, param=param) from None
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {json_type(record)}", line=line, param=param)
    return record


def _shape(record: dict[str, Any], line: int, param: str | None) -> str:
    keys = frozenset(record)
    if keys in KEYS:
        return KEYS[keys]
    unexpected = sorted(keys - KNOWN_KEYS)
    if unexpected:
        # Named, so a client who wrote "lable" learns which key is wrong.
        raise DataError(
            f"unexpected key(s) {', '.join(map(repr, unexpected))}; a line is one of {SHAPES}",
            line=line,
            param=param,
        )
    # Only known keys, in a combination no format has: say what is missing for the nearest one.
    if "text" in keys and {"label", "labels"} <= keys:
        raise DataError("give 'label' or 'labels', not both", line=line, param=param)
    if "prompt" in keys or "completion" in keys:
        missing = "completion" if "prompt" in keys else "prompt"
        if keys - {"prompt", "completion"}:
            raise DataError(
                "a prompt/completion line has only 'prompt' and 'completion'", line=line, param=param
            )
        raise DataError(f"missing '{missing}'", line=line, param=param)
    if "messages" in keys:
        raise DataError("a chat line has only 'messages'", line=line, param=param)
    raise DataError("missing 'text'", line=line, param=param)


def _text(
    record: dict[str, Any], key: str, line: int, param: str | None, *, allow_empty: bool = False
) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"'{key}' must be a string, got {json_type(value)}", line=line, param=param)
    if not allow_empty and not value.strip():
        raise DataError(f"'{key}' is empty", line=line, param=param)
    return value


def _class_label(value: Any, where: str, line: int, param: str | None) -> str | int:
    # bool is an int subclass in Python and floats are ambiguous as classes: both refused.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(
            f"{where} must be a string or an integer, got {json_type(value)}", line=line, param=param
        )
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where} is an empty string", line=line, param=param)
    return value


def _settle_labelled(records: list[tuple[int, dict[str, Any]]], param: str | None) -> DataFile:
    """Classification, or regression when the labels are non-integer numbers: every label a target."""
    # Decided by the file, so that the error lands on the odd line out: a first label that is a
    # non-integer number, or any such number among labels that are all numbers, means regression.
    labels = [record["label"] for _, record in records]
    regression = isinstance(labels[0], float) or (
        any(isinstance(label, float) for label in labels)
        and not any(isinstance(label, str) for label in labels)
    )
    if regression:
        return DataFile("regression", [_regression(record, line, param) for line, record in records])
    examples = [
        Example(
            _text(record, "text", line, param), _class_label(record["label"], "'label'", line, param), line
        )
        for line, record in records
    ]
    _check_one_label_type([(example.label, example.line) for example in examples], param)
    return DataFile("classification", list(examples))


def _regression(record: dict[str, Any], line: int, param: str | None) -> RegressionExample:
    value = record["label"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(
            f"'label' must be a number in a regression file (other lines have non-integer labels), "
            f"got {json_type(value)}",
            line=line,
            param=param,
        )
    if not math.isfinite(value):
        raise DataError("'label' must be a finite number", line=line, param=param)
    return RegressionExample(_text(record, "text", line, param), float(value), line)


def _multi_label(record: dict[str, Any], line: int, param: str | None) -> MultiLabelExample:
    labels = record["labels"]
    if not isinstance(labels, list):
        raise DataError(f"'labels' must be an array, got {json_type(labels)}", line=line, param=param)
    checked = tuple(_class_label(label, "each of 'labels'", line, param) for label in labels)
    if len(set(checked)) != len(checked):
        raise DataError("'labels' lists a label twice", line=line, param=param)
    if len({type(label) for label in checked}) > 1:
        raise DataError("'labels' mixes strings and integers", line=line, param=param)
    return MultiLabelExample(_text(record, "text", line, param), checked, line)


def _plain_text(record: dict[str, Any], line: int, param: str | None) -> TextExample:
    return TextExample(_text(record, "text", line, param), line)


def _prompt_completion(record: dict[str, Any], line: int, param: str | None) -> PromptCompletionExample:
    return PromptCompletionExample(
        _text(record, "prompt", line, param), _text(record, "completion", line, param, allow_empty=True), line
    )


def _chat(record: dict[str, Any], line: int, param: str | None) -> ChatExample:
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError("'messages' must be a non-empty array", line=line, param=param)
    parsed = tuple(_message(message, index, line, param) for index, message in enumerate(messages))
    if not any(message.role == "assistant" for message in parsed):
        raise DataError("the chat has no assistant turn: nothing to learn from", line=line, param=param)
    return ChatExample(parsed, line)


def _message(message: Any, index: int, line: int, param: str | None) -> Message:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise DataError(f"{where} must be an object, got {json_type(message)}", line=line, param=param)
    unexpected = sorted(set(message) - {"role", "content"})
    if unexpected:
        raise DataError(
            f"{where} has unexpected key(s) {', '.join(map(repr, unexpected))}; "
            "a message has only 'role' and 'content'",
            line=line,
            param=param,
        )
    for key in ("role", "content"):
        if key not in message:
            raise DataError(f"{where} is missing '{key}'", line=line, param=param)
        if not isinstance(message[key], str):
            raise DataError(
                f"{where}.{key} must be a string, got {json_type(message[key])}", line=line, param=param
            )
    if message["role"] not in CHAT_ROLES:
        raise DataError(
            f"{where}.role {message['role']!r} is not one of {list(CHAT_ROLES)}", line=line, param=param
        )
    return Message(message["role"], message["content"])


_PARSERS = {
    "multi_label": _multi_label,
    "text": _plain_text,
    "prompt_completion": _prompt_completion,
    "chat": _chat,
}


def _check_one_label_type(labels: list[tuple[str | int, int]], param: str | None) -> None:
    if not labels:
        return
    first_label, first_line = labels[0]
    for label, line in labels:
        if type(label) is not type(first_label):
            raise DataError(
                f"label {label!r} is {json_type(label)} but line {first_line}'s label is "
                f"{json_type(first_label)}; use one type for all labels",
                line=line,
                param=param,
            )


def json_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    if value is None:
        return "null"
    return names.get(type(value), "an object")
