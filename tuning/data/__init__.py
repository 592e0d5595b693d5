"""JSONL training data: six formats (tuning.data.formats), their examples and classification labels.

Imports no torch: the API validates uploads with it.
"""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tuning.data.examples import (
    AnyExample,
    ChatExample,
    Example,
    Label,
    Message,
    MultiLabelExample,
    PromptCompletionExample,
    RegressionExample,
    TextExample,
)
from tuning.data.formats import DataFile, read_data_file
from tuning.data.labels import (
    build_label_map,
    check_validation_labels,
    example_labels,
    regression_examples,
    sort_labels,
)
from tuning.errors import DataError
from tuning.spec import DataFormat

__all__ = [
    "AnyExample",
    "ChatExample",
    "DataFile",
    "Example",
    "FileReport",
    "Label",
    "Message",
    "MultiLabelExample",
    "PromptCompletionExample",
    "RegressionExample",
    "TextExample",
    "build_label_map",
    "check_validation_labels",
    "example_labels",
    "read_classification_file",
    "read_data_file",
    "regression_examples",
    "sort_labels",
    "validate_file",
]


@dataclass(frozen=True)
class FileReport:
    """What an upload holds: its format, example count and, for classification, examples per label."""

    format: DataFormat
    examples: int
    label_counts: dict[str, int]


def validate_file(path: Path, *, param: str | None = None) -> FileReport:
    """Check every line of `path`; DataError names the first bad line (1-based)."""
    data = read_data_file(path, param=param)
    counts: Counter[Label] = Counter()
    for example in data.examples:
        if isinstance(example, Example):
            counts[example.label] += 1
        elif isinstance(example, MultiLabelExample):
            counts.update(example.labels)
    return FileReport(
        format=data.format,
        examples=len(data.examples),
        label_counts={str(label): counts[label] for label in sort_labels(counts)},
    )


def read_classification_file(path: Path, *, param: str = "training_file") -> list[Example]:
    """All examples of a single-label classification file; other formats are refused by name."""
    data = read_data_file(path, param=param)
    if data.format != "classification":
        raise DataError(
            f'expected single-label classification lines ({{"text", "label"}}), '
            f"but the file is {data.format}",
            param=param,
        )
    return data.examples  # type: ignore[return-value]
