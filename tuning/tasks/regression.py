"""Regression: one output, trained with mean squared error against each example's number.
Reports the MSE (also the loss) and R².

Targets come from a regression file, or from a classification file of integer labels when the spec
says `problem_type: regression` (ratings 1–5, say): each integer is then the target itself.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tuning.batching import Batch, Encoded, encode
from tuning.data import AnyExample, DataFile, Label, RegressionExample, regression_examples
from tuning.errors import SpecError
from tuning.evaluate import Evaluation, classifier_logits, evaluation_batches
from tuning.events import StopCheck, never_stop
from tuning.metrics import r2
from tuning.spec import JobSpec
from tuning.task_model import TaskModel
from tuning.tasks import TaskData


class Regression:
    kind = "regression"

    def check_data(self, train: DataFile, validation: DataFile | None) -> TaskData:
        examples = regression_examples(train, "training_file")
        checked = regression_examples(validation, "validation_file") if validation is not None else []
        return TaskData(list(examples), list(checked), [])

    def load(self, spec: JobSpec, base_path: Path, labels: Sequence[Label]) -> TaskModel:
        from tuning.build import prepare_classifier

        _refuse_class_distribution_regularizers(spec)
        return prepare_classifier(spec, base_path, [])  # no labels: a head with one output

    def encode(
        self, task_model: TaskModel, spec: JobSpec, examples: Sequence[AnyExample], labels: Sequence[Label]
    ) -> Encoded:
        rows: Sequence[RegressionExample] = examples  # type: ignore[assignment]
        texts = encode(
            task_model.tokenizer, [row.text for row in rows], None, max_length=task_model.max_length
        )
        return Encoded(texts.input_ids, [row.value for row in rows], texts.pad_id, label_kind="value")

    def loss(
        self, model: nn.Module, batch: Batch, device: torch.device, *, mixed_precision: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = classifier_logits(model, batch, device, mixed_precision=mixed_precision)
        return F.mse_loss(logits.squeeze(-1), batch["labels"].to(device)), logits

    def evaluate(
        self,
        model: nn.Module,
        encoded: Encoded,
        *,
        batch_size: int,
        device: torch.device,
        should_stop: StopCheck = never_stop,
    ) -> Evaluation:
        predicted: list[torch.Tensor] = []
        gold: list[torch.Tensor] = []

        def visit(logits: torch.Tensor, batch: Batch) -> None:
            predicted.append(logits.squeeze(-1).cpu())
            gold.append(batch["labels"].cpu())

        evaluation_batches(
            model, encoded, batch_size=batch_size, device=device, visit=visit, should_stop=should_stop
        )
        predictions, targets = torch.cat(predicted), torch.cat(gold)
        mse = F.mse_loss(predictions.double(), targets.double()).item()
        return Evaluation({"loss": mse, "mse": mse, "r2": r2(predictions, targets)}, len(encoded))


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
