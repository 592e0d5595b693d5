"""What a job's task decides: which labels, which model class and head, how examples become token
sequences, the loss, and the metrics an evaluation reports.

One module per kind, `tuning/tasks/<kind>.py`, each exposing `TASK`: single_label, multi_label and
regression (sequence_classification), and causal_lm. `task_for` picks the kind from the spec and
the training file's format, refusing a file that cannot train the job's task.
"""

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from tuning.batching import Batch, Encoded
from tuning.data import AnyExample, DataFile, Label
from tuning.errors import DataError
from tuning.evaluate import Evaluation
from tuning.events import StopCheck, never_stop
from tuning.spec import FORMAT_OF_PROBLEM, FORMATS_BY_TASK, JobSpec
from tuning.task_model import TaskModel


@dataclass(frozen=True)
class TaskData:
    """A job's examples, checked against each other, and the label map its head is built for."""

    train: list[AnyExample]
    validation: list[AnyExample]
    labels: list[Label]  # index → label; empty for regression and causal_lm


class Task(Protocol):
    kind: str  # a tuning.spec.METRICS key

    def check_data(self, train: DataFile, validation: DataFile | None) -> TaskData:
        """Raise DataError (param training_file / validation_file, with the line) if they cannot train."""
        ...

    def load(self, spec: JobSpec, base_path: Path, labels: Sequence[Label]) -> TaskModel:
        """The base model ready for this task: backbone frozen, any new head trainable."""
        ...

    def encode(
        self, task_model: TaskModel, spec: JobSpec, examples: Sequence[AnyExample], labels: Sequence[Label]
    ) -> Encoded: ...

    def loss(
        self, model: nn.Module, batch: Batch, device: torch.device, *, mixed_precision: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the task loss, the float32 logits it came from): regularizers such as KL read the logits."""
        ...

    def evaluate(
        self,
        model: nn.Module,
        encoded: Encoded,
        *,
        batch_size: int,
        device: torch.device,
        should_stop: StopCheck = never_stop,
        mixed_precision: bool = False,
    ) -> Evaluation: ...


def task_for(spec: JobSpec, training_format: str) -> Task:
    """The task kind for `spec` on a training file of `training_format`."""
    allowed = FORMATS_BY_TASK[spec.task]
    if training_format not in allowed:
        raise DataError(
            f"task {spec.task} reads {', '.join(allowed)} lines; the training file is {training_format}",
            param="training_file",
        )
    kind = "causal_lm" if spec.task == "causal_lm" else _problem_type(spec, training_format)
    return task_named(kind)


def task_named(kind: str) -> Task:
    """The task of a METRICS kind; a resolved spec's is `spec.metrics_kind`."""
    return importlib.import_module(f"tuning.tasks.{kind}").TASK  # type: ignore[no-any-return]


def resolved_spec(spec: JobSpec, task: Task) -> JobSpec:
    """The spec with problem_type filled in, as the manifest records it so a reload needs no data file."""
    if spec.task == "causal_lm" or spec.problem_type is not None:
        return spec
    return spec.model_copy(update={"problem_type": task.kind})


def _problem_type(spec: JobSpec, training_format: str) -> str:
    if spec.problem_type is None:
        return next(kind for kind, fmt in FORMAT_OF_PROBLEM.items() if fmt == training_format)
    expected = FORMAT_OF_PROBLEM[spec.problem_type]
    # Integer class labels can also be read as regression targets (ratings 1–5, say).
    if training_format != expected and not (
        spec.problem_type == "regression" and training_format == "classification"
    ):
        raise DataError(
            f"problem_type {spec.problem_type} reads {expected} lines; "
            f"the training file is {training_format}",
            param="training_file",
        )
    return spec.problem_type
