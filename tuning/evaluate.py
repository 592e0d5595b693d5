"""Evaluation of a sequence classifier: mean cross-entropy and accuracy over a labelled set."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tuning.batching import Batch, Encoded, batches_in_order, to_device
from tuning.device import autocast
from tuning.errors import Cancelled
from tuning.events import StopCheck, never_stop


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    examples: int


def classifier_logits(
    model: nn.Module, batch: Batch, device: torch.device, *, mixed_precision: bool = False
) -> torch.Tensor:
    """Float32 logits of one batch (labels, if any, are not passed: the loss is ours to compute).

    Only training uses mixed precision: evaluation and prediction run in float32 so that the
    accuracy a job reports is the one a PEFT user reproduces from the artifact (bf16 would move
    logits by ~1e-2).
    """
    inputs = to_device({k: v for k, v in batch.items() if k != "labels"}, device)
    if mixed_precision:
        with autocast(device):
            return model(**inputs).logits.float()
    return model(**inputs).logits.float()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    encoded: Encoded,
    *,
    batch_size: int,
    device: torch.device,
    should_stop: StopCheck = never_stop,
) -> Evaluation:
    """Loss and accuracy in eval mode (dropout off); the model's train/eval mode is restored after."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    try:
        for batch in batches_in_order(encoded, batch_size):
            if should_stop():
                raise Cancelled()
            logits = classifier_logits(model, batch, device)
            labels = batch["labels"].to(device)
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(dim=-1) == labels).sum().item())
    finally:
        model.train(was_training)
    return Evaluation(total_loss / len(encoded), correct / len(encoded), len(encoded))
