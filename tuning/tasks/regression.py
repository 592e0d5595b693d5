"""Regression: one output, trained with mean squared error against each example's number.
Reports the MSE (also the loss) and R².

Targets come from a regression file, or from a classification file of integer labels when the spec
says `problem_type: regression` (ratings 1–5, say): each integer is then the target itself.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from tuning.batching import Encoded, encode
from tuning.data import AnyExample, DataFile, Label, RegressionExample, regression_examples
from tuning.errors import SpecError
from tuning.metrics import r2
from tuning.spec import JobSpec
from tuning.task_model import TaskModel
from tuning.tasks import TaskData
from tuning.tasks.classifier_task import ClassifierTask


class Regression(ClassifierTask):
    kind = "regression"

    def check_data(self, train: DataFile, validation: DataFile | None) -> TaskData:
        examples = regression_examples(train, "training_file")
        checked = regression_examples(validation, "validation_file") if validation is not None else []
        return TaskData(list(examples), list(checked), [])

    def load(self, spec: JobSpec, base_path: Path, labels: Sequence[Label]) -> TaskModel:
        _refuse_class_distribution_regularizers(spec)
        return super().load(spec, base_path, [])  # no labels: a head with one output

    def encode(
        self, task_model: TaskModel, spec: JobSpec, examples: Sequence[AnyExample], labels: Sequence[Label]
    ) -> Encoded:
        rows: Sequence[RegressionExample] = examples  # type: ignore[assignment]
        texts = encode(
            task_model.tokenizer, [row.text for row in rows], None, max_length=task_model.max_length
        )
        return Encoded(texts.input_ids, [row.value for row in rows], texts.pad_id, label_kind="value")

    def mean_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.squeeze(-1), targets)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        predictions = logits.squeeze(-1)
        mse = F.mse_loss(predictions.double(), targets.double()).item()
        return {"loss": mse, "mse": mse, "r2": r2(predictions, targets)}


def _refuse_class_distribution_regularizers(spec: JobSpec) -> None:
    # Both read softmax(logits) as a class distribution; over one output it is constantly 1, so KL
    # and EWC's Fisher would be exactly 0: a regularizer that silently does nothing.
    for name, options in (("kl", spec.regularizers.kl), ("ewc", spec.regularizers.ewc)):
        if options is not None:
            raise SpecError(
                f"regularizers.{name} compares class distributions; a regression job has none",
                param=f"regularizers.{name}",
            )


TASK = Regression()
