"""Single-label sequence classification: cross-entropy over the labels; accuracy and macro-F1."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tuning.batching import Encoded, encode
from tuning.data import AnyExample, DataFile, Example, Label, build_label_map, check_validation_labels
from tuning.metrics import macro_f1
from tuning.spec import JobSpec
from tuning.task_model import TaskModel
from tuning.tasks import TaskData
from tuning.tasks.classifier_task import ClassifierTask


class SingleLabel(ClassifierTask):
    kind = "single_label"

    def check_data(self, train: DataFile, validation: DataFile | None) -> TaskData:
        examples: list[Example] = train.examples  # type: ignore[assignment]
        labels = build_label_map(examples)
        checked: list[Example] = []
        if validation is not None:
            _same_format(validation, train.format)
            checked = validation.examples  # type: ignore[assignment]
            check_validation_labels(checked, labels)
        return TaskData(list(examples), list(checked), labels)

    def encode(
        self, task_model: TaskModel, spec: JobSpec, examples: Sequence[AnyExample], labels: Sequence[Label]
    ) -> Encoded:
        index = {label: position for position, label in enumerate(labels)}
        rows: Sequence[Example] = examples  # type: ignore[assignment]
        return encode(
            task_model.tokenizer,
            [example.text for example in rows],
            [index[example.label] for example in rows],
            max_length=task_model.max_length,
        )

    def mean_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        predictions = logits.argmax(dim=-1)
        return {
            "loss": F.cross_entropy(logits, targets).item(),
            "accuracy": (predictions == targets).float().mean().item(),
            "macro_f1": macro_f1(predictions, targets),
        }


def _same_format(validation: DataFile, expected: str) -> None:
    from tuning.errors import DataError

    if validation.format != expected:
        raise DataError(
            f"the validation file is {validation.format} but the training file is {expected}",
            param="validation_file",
        )


TASK = SingleLabel()
