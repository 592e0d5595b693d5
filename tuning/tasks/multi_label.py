"""Multi-label sequence classification: each label an independent yes/no, trained with binary
cross-entropy on its logit; a label is predicted when sigmoid(logit) > 0.5 (logit > 0).
Reports micro-F1, macro-F1 over the labels, and exact match of the whole label set.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tuning.batching import Encoded, encode
from tuning.data import (
    AnyExample,
    DataFile,
    Label,
    MultiLabelExample,
    build_label_map,
    check_validation_labels,
)
from tuning.errors import DataError
from tuning.metrics import exact_match, label_macro_f1, micro_f1
from tuning.spec import JobSpec
from tuning.task_model import TaskModel
from tuning.tasks import TaskData
from tuning.tasks.classifier_task import ClassifierTask


class MultiLabel(ClassifierTask):
    kind = "multi_label"

    def check_data(self, train: DataFile, validation: DataFile | None) -> TaskData:
        _expect_format(train, "training_file")
        examples: list[MultiLabelExample] = train.examples  # type: ignore[assignment]
        labels = build_label_map(examples)
        checked: list[MultiLabelExample] = []
        if validation is not None:
            _expect_format(validation, "validation_file")
            checked = validation.examples  # type: ignore[assignment]
            check_validation_labels(checked, labels)
        return TaskData(list(examples), list(checked), labels)

    def encode(
        self, task_model: TaskModel, spec: JobSpec, examples: Sequence[AnyExample], labels: Sequence[Label]
    ) -> Encoded:
        rows: Sequence[MultiLabelExample] = examples  # type: ignore[assignment]
        texts = encode(
            task_model.tokenizer, [row.text for row in rows], None, max_length=task_model.max_length
        )
        multi_hot = [[1.0 if label in row.labels else 0.0 for label in labels] for row in rows]
        return Encoded(texts.input_ids, multi_hot, texts.pad_id, label_kind="multi_hot")

    def mean_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        predictions, gold = logits > 0, targets.bool()  # sigmoid(logit) > 0.5
        return {
            "loss": F.binary_cross_entropy_with_logits(logits, targets).item(),
            "micro_f1": micro_f1(predictions, gold),
            "macro_f1": label_macro_f1(predictions, gold),
            "exact_match": exact_match(predictions, gold),
        }


def _expect_format(data: DataFile, param: str) -> None:
    if data.format != "multi_label":
        raise DataError(
            f'multi_label reads {{"text", "labels": [...]}} lines; the file is {data.format}', param=param
        )


TASK = MultiLabel()
