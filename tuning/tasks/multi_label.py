"""Multi-label sequence classification: each label an independent yes/no, trained with binary
cross-entropy on its logit; a label is predicted when sigmoid(logit) > 0.5 (logit > 0).
Reports micro-F1, macro-F1 over the labels, and exact match of the whole label set.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tuning.batching import Batch, Encoded, encode
from tuning.data import (
    AnyExample,
    DataFile,
    Label,
    MultiLabelExample,
    build_label_map,
    check_validation_labels,
)
from tuning.errors import DataError
from tuning.evaluate import Evaluation, classifier_logits, evaluation_batches
from tuning.events import StopCheck, never_stop
from tuning.metrics import exact_match, label_macro_f1, micro_f1
from tuning.spec import JobSpec
from tuning.task_model import TaskModel
from tuning.tasks import TaskData


class MultiLabel:
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

    def load(self, spec: JobSpec, base_path: Path, labels: Sequence[Label]) -> TaskModel:
        from tuning.build import prepare_classifier

        return prepare_classifier(spec, base_path, labels)

    def encode(
        self, task_model: TaskModel, spec: JobSpec, examples: Sequence[AnyExample], labels: Sequence[Label]
    ) -> Encoded:
        rows: Sequence[MultiLabelExample] = examples  # type: ignore[assignment]
        texts = encode(
            task_model.tokenizer, [row.text for row in rows], None, max_length=task_model.max_length
        )
        multi_hot = [[1.0 if label in row.labels else 0.0 for label in labels] for row in rows]
        return Encoded(texts.input_ids, multi_hot, texts.pad_id, label_kind="multi_hot")

    def loss(
        self, model: nn.Module, batch: Batch, device: torch.device, *, mixed_precision: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = classifier_logits(model, batch, device, mixed_precision=mixed_precision)
        return F.binary_cross_entropy_with_logits(logits, batch["labels"].to(device)), logits

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
            targets = batch["labels"].to(logits.device)
            # Mean over labels, summed over examples: divided by the count below, it equals the
            # training loss's mean over the whole set.
            total_loss += (
                F.binary_cross_entropy_with_logits(logits, targets, reduction="sum").item()
                / (targets.shape[1])
            )
            predicted.append((logits > 0).cpu())  # sigmoid(logit) > 0.5
            gold.append(targets.bool().cpu())

        evaluation_batches(
            model, encoded, batch_size=batch_size, device=device, visit=visit, should_stop=should_stop
        )
        predictions, targets = torch.cat(predicted), torch.cat(gold)
        return Evaluation(
            {
                "loss": total_loss / len(encoded),
                "micro_f1": micro_f1(predictions, targets),
                "macro_f1": label_macro_f1(predictions, targets),
                "exact_match": exact_match(predictions, targets),
            },
            len(encoded),
        )


def _expect_format(data: DataFile, param: str) -> None:
    if data.format != "multi_label":
        raise DataError(
            f'multi_label reads {{"text", "labels": [...]}} lines; the file is {data.format}', param=param
        )


TASK = MultiLabel()
