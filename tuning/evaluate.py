"""What every task's evaluation shares: the result type, float32 logits, and the batched loop."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tuning.batching import Batch, Encoded, batches_by_length, to_device
from tuning.device import autocast
from tuning.distribution import is_sharded
from tuning.errors import Cancelled
from tuning.events import StopCheck, never_stop
from tuning.memory import holds_bf16


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: every metric of the task's kind (tuning.spec.METRICS), `loss` among them."""

    metrics: dict[str, float]
    examples: int

    @property
    def loss(self) -> float:
        return self.metrics["loss"]

    def as_json(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics), "examples": self.examples}

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> "Evaluation":
        return cls(dict(stored["metrics"]), int(stored["examples"]))


def classifier_logits(
    model: nn.Module, batch: Batch, device: torch.device, *, mixed_precision: bool = False
) -> torch.Tensor:
    """Float32 logits of one batch (labels, if any, are not passed: the loss is ours to compute).

    `mixed_precision`: the forward under bf16 autocast (training and its evaluations, where
    tuning.device.uses_bf16 says so). Prediction from an artifact runs in float32.
    """
    inputs = to_device({k: v for k, v in batch.items() if k != "labels"}, device)
    with autocast(device, mixed_precision):
        return model(**inputs).logits.float()


def evaluation_batches(
    model: nn.Module,
    encoded: Encoded,
    *,
    batch_size: int,
    device: torch.device,
    visit: Callable[[torch.Tensor, Batch], None],
    should_stop: StopCheck = never_stop,
    mixed_precision: bool = False,
) -> None:
    """Call `visit(float32 logits, batch)` for each batch, in eval mode (dropout off) and without autograd.

    `mixed_precision`: the forwards under bf16 autocast, as the job's training steps run. A job's
    evaluations are in the precision it trains in, as the Trainer's are with `bf16=True`: bf16 moves
    logits by ~1e-2 (an argmax near a tie may flip), and on a CPU with native bf16 it evaluates at
    1.5-1.9× float32's speed. `mixed_precision: "no"` evaluates, as it trains, in float32; the one
    evaluation a job reports is float32 either way (tuning.train.Evaluations).

    Batches come longest first (`batches_by_length`), so each pads to a length near its examples';
    a task's evaluate accumulates its sums in `visit`, which must not depend on the order. The
    model's train/eval mode is restored after.
    """
    was_training = model.training
    bf16_base = holds_bf16(model)
    model.eval()
    # A sharded model's forward gathers each layer's weights into buffers that the next training step
    # reuses: made under inference mode, autograd would refuse them there. no_grad saves as much here.
    no_autograd = torch.no_grad() if is_sharded(model) else torch.inference_mode()
    try:
        with no_autograd:
            for batch in batches_by_length(encoded, batch_size):
                if should_stop():
                    raise Cancelled()
                # A frozen base held in bf16 (tuning.memory, CUDA only) needs autocast either way.
                logits = classifier_logits(model, batch, device, mixed_precision=mixed_precision or bf16_base)
                visit(logits, batch)
    finally:
        model.train(was_training)
