"""Labels of classification data: the index ↔ label map a head is built for, and its checks."""

from collections.abc import Iterable, Sequence

from tuning.data.examples import Example, Label, MultiLabelExample, RegressionExample
from tuning.data.formats import DataFile
from tuning.errors import DataError


def build_label_map(
    examples: Sequence[Example | MultiLabelExample], *, param: str = "training_file"
) -> list[Label]:
    """Index → label: the training labels sorted (ints numerically), refusing fewer than two."""
    labels = sort_labels(example_labels(examples))
    if len(labels) < 2:
        raise DataError(
            f"classification needs at least 2 distinct labels, found {len(labels)}: {labels}", param=param
        )
    return labels


def check_validation_labels(
    examples: Sequence[Example | MultiLabelExample],
    labels: Sequence[Label],
    *,
    param: str = "validation_file",
) -> None:
    """Refuse a validation label the model cannot predict because training never showed it."""
    known = set(labels)
    for example in examples:
        for label in _labels_of(example):
            if label not in known:
                raise DataError(
                    f"label {label!r} never appears in the training file (its labels: {list(labels)})",
                    line=example.line,
                    param=param,
                )


def example_labels(examples: Iterable[Example | MultiLabelExample]) -> set[Label]:
    return {label for example in examples for label in _labels_of(example)}


def sort_labels(labels: Iterable[Label]) -> list[Label]:
    # Labels in one file share a type (tuning.data.formats enforces it), so plain sorting is total.
    return sorted(labels)  # type: ignore[type-var]


def _labels_of(example: Example | MultiLabelExample) -> tuple[Label, ...]:
    return example.labels if isinstance(example, MultiLabelExample) else (example.label,)


def regression_examples(data: DataFile, param: str) -> list[RegressionExample]:
    """The file's examples as numeric targets: a regression file's, or integer class labels."""
    if data.format == "regression":
        return list(data.examples)  # type: ignore[arg-type]
    if data.format != "classification":
        raise DataError(
            f'regression reads {{"text", "label": <number>}} lines; the file is {data.format}', param=param
        )
    examples: list[Example] = data.examples  # type: ignore[assignment]
    # A classification file holds one label type, so the first string label is the first line.
    for example in examples:
        if isinstance(example.label, str):
            raise DataError(
                f"regression needs a number as 'label', got the string {example.label!r}",
                line=example.line,
                param=param,
            )
    return [RegressionExample(e.text, float(e.label), e.line) for e in examples]
