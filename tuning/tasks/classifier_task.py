"""What the three sequence_classification kinds share: the classifier with the spec's head, a loss
over its logits, and metrics computed once on the whole validation set's logits.

Each kind (single_label, multi_label, regression) says how it reads its data and encodes labels,
its batch loss (`mean_loss`) and its metrics (`metrics`, `loss` among them).
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from tuning.batching import Batch, Encoded
from tuning.build import prepare_classifier
from tuning.data import Label
from tuning.evaluate import Evaluation, classifier_logits, evaluation_batches
from tuning.events import StopCheck, never_stop
from tuning.spec import JobSpec
from tuning.task_model import TaskModel


class ClassifierTask(ABC):
    kind: str

    def load(self, spec: JobSpec, base_path: Path, labels: Sequence[Label]) -> TaskModel:
        return prepare_classifier(spec, base_path, labels)

    def loss(
        self, model: nn.Module, batch: Batch, device: torch.device, *, mixed_precision: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = classifier_logits(model, batch, device, mixed_precision=mixed_precision)
        return self.mean_loss(logits, batch["labels"].to(device)), logits

    def evaluate(
        self,
        model: nn.Module,
        encoded: Encoded,
        *,
        batch_size: int,
        device: torch.device,
        should_stop: StopCheck = never_stop,
        mixed_precision: bool = False,
    ) -> Evaluation:
        # A validation set's logits are a few floats per example: kept whole, every metric (F1 and R²
        # need the whole set) is computed once from them.
        outputs: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []

        def visit(logits: torch.Tensor, batch: Batch) -> None:
            outputs.append(logits.cpu())
            targets.append(batch["labels"].cpu())

        evaluation_batches(
            model,
            encoded,
            batch_size=batch_size,
            device=device,
            visit=visit,
            should_stop=should_stop,
            mixed_precision=mixed_precision,
        )
        return Evaluation(self.metrics(torch.cat(outputs), torch.cat(targets)), len(encoded))

    @abstractmethod
    def mean_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch, a mean over its examples."""

    @abstractmethod
    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Every metric of the kind (tuning.spec.METRICS) over a whole set; `loss` as mean_loss would give."""
