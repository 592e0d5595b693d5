"""Single-label sequence classification: cross-entropy over the labels; accuracy and macro-F1."""

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tuning.batching import Batch, Encoded, encode
from tuning.data import AnyExample, DataFile, Example, Label, build_label_map, check_validation_labels
from tuning.evaluate import Evaluation, classifier_logits, evaluation_batches
from tuning.events import StopCheck, never_stop
from tuning.metrics import macro_f1
from tuning.spec import JobSpec
from tuning.task_model import TaskModel
from tuning.tasks import TaskData


class SingleLabel:
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

    def load(self, spec: JobSpec, base_path: Path, labels: Sequence[Label]) -> TaskModel:
        from tuning.build import prepare_classifier

        return prepare_classifier(spec, base_path, labels)

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

    def loss(
        self, model: nn.Module, batch: Batch, device: torch.device, *, mixed_precision: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = classifier_logits(model, batch, device, mixed_precision=mixed_precision)
        return F.cross_entropy(logits, batch["labels"].to(device)), logits

    def evaluate(
        self,
        model: nn.Module,
        encoded: Encoded,
        *,
        batch_size: int,
        device: torch.device,
        should_stop: StopCheck = never_stop,
    ) -> Evaluation:
        total_loss = 0.0
        predicted: list[torch.Tensor] = []
        gold: list[torch.Tensor] = []

        def visit(logits: torch.Tensor, batch: Batch) -> None:
            nonlocal total_loss
            labels = batch["labels"].to(logits.device)
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            predicted.append(logits.argmax(dim=-1).cpu())
            gold.append(labels.cpu())

        evaluation_batches(
            model, encoded, batch_size=batch_size, device=device, visit=visit, should_stop=should_stop
        )
        predictions, targets = torch.cat(predicted), torch.cat(gold)
        count = len(encoded)
        return Evaluation(
            {
                "loss": total_loss / count,
                "accuracy": (predictions == targets).float().mean().item(),
                "macro_f1": macro_f1(predictions, targets),
            },
            count,
        )


def _same_format(validation: DataFile, expected: str) -> None:
    from tuning.errors import DataError

    if validation.format != expected:
        raise DataError(
            f"the validation file is {validation.format} but the training file is {expected}",
            param="validation_file",
        )


TASK = SingleLabel()
