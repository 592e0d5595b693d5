"""The training loop: AdamW, linear warmup then linear decay, gradient clipping, periodic evaluation.

Plain on purpose: one function you can read top to bottom. It trains whatever parameters of the
model require grad (the method decided that) and reports through events.
"""

import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tuning.batching import Batch, Encoded, shuffled_batches, steps_per_epoch
from tuning.errors import Cancelled
from tuning.evaluate import Evaluation, classifier_logits, evaluate
from tuning.events import Event, EventSink, StopCheck, ignore_event, never_stop
from tuning.spec import Hyperparameters


@dataclass(frozen=True)
class TrainResult:
    steps: int
    examples_seen: int
    trained_tokens: int
    train_loss: float  # mean over the last epoch's steps
    seconds: float
    initial_eval: Evaluation | None  # step 0: the base with its untrained head
    final_eval: Evaluation | None


def seed_everything(seed: int) -> None:
    """Seed Python and torch; call before building the model so the new head starts the same."""
    random.seed(seed)
    torch.manual_seed(seed)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * warmup_ratio)


def learning_rate_at(step: int, *, peak: float, total_steps: int, warmup: int) -> float:
    """Learning rate of optimizer step `step` (1-based): linear up to `peak`, then linear down.

    Step 1 already gets a non-zero rate and the last step a small positive one, so no step is wasted.
    """
    if step <= warmup:
        return peak * step / warmup
    return peak * (total_steps - step + 1) / (total_steps - warmup)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: decaying biases and LayerNorm gains pulls them to 0, which is not a prior."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]


def train(
    model: nn.Module,
    train_set: Encoded,
    validation_set: Encoded | None,
    hp: Hyperparameters,
    *,
    device: torch.device,
    on_event: EventSink = ignore_event,
    should_stop: StopCheck = never_stop,
) -> TrainResult:
    per_epoch = steps_per_epoch(len(train_set), hp.batch_size)
    total_steps = hp.epochs * per_epoch
    warmup = warmup_steps(total_steps, hp.warmup_ratio)
    optimizer = torch.optim.AdamW(parameter_groups(model, hp.weight_decay), lr=hp.learning_rate)
    trainable = [p for p in model.parameters() if p.requires_grad]
    shuffle = torch.Generator().manual_seed(hp.seed)

    eval_seconds = 0.0  # kept out of examples/s, which should describe training speed

    def run_eval(step: int) -> Evaluation | None:
        nonlocal eval_seconds
        if validation_set is None:
            return None
        eval_started = time.perf_counter()
        result = evaluate(
            model, validation_set, batch_size=hp.batch_size, device=device, should_stop=should_stop
        )
        eval_seconds += time.perf_counter() - eval_started
        on_event(_eval_event(result, step, step / per_epoch))
        return result

    started = time.perf_counter()
    initial_eval = final_eval = run_eval(0)
    last_eval_step = 0
    step = examples_seen = trained_tokens = 0
    window: list[float] = []  # losses since the last metrics event
    epoch_losses: list[float] = []
    model.train()
    for _ in range(hp.epochs):
        epoch_losses = []
        for batch in shuffled_batches(train_set, hp.batch_size, shuffle):
            if should_stop():
                raise Cancelled()
            step += 1
            lr = learning_rate_at(step, peak=hp.learning_rate, total_steps=total_steps, warmup=warmup)
            loss = _optimizer_step(model, optimizer, trainable, batch, lr, hp.max_grad_norm, device)
            window.append(loss)
            epoch_losses.append(loss)
            examples_seen += len(batch["labels"])
            trained_tokens += int(batch["attention_mask"].sum())
            if step % hp.logging_steps == 0 or step == total_steps:
                elapsed = time.perf_counter() - started
                speed = examples_seen / max(elapsed - eval_seconds, 1e-9)
                on_event(_metrics_event(step, total_steps, step / per_epoch, window, lr, speed, elapsed))
                window = []
            if hp.eval_steps is not None and step % hp.eval_steps == 0:
                final_eval, last_eval_step = run_eval(step), step
        if hp.eval_steps is None:
            final_eval, last_eval_step = run_eval(step), step
    if last_eval_step != step:
        # The reported result must describe the model that gets exported.
        final_eval = run_eval(step)
    return TrainResult(
        steps=step,
        examples_seen=examples_seen,
        trained_tokens=trained_tokens,
        train_loss=sum(epoch_losses) / len(epoch_losses),
        seconds=time.perf_counter() - started,
        initial_eval=initial_eval,
        final_eval=final_eval,
    )


def _optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainable: Iterable[torch.Tensor],
    batch: Batch,
    lr: float,
    max_grad_norm: float | None,
    device: torch.device,
) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    logits = classifier_logits(model, batch, device, mixed_precision=True)
    loss = F.cross_entropy(logits, batch["labels"].to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    return loss.item()


def _metrics_event(
    step: int, total_steps: int, epoch: float, losses: list[float], lr: float, speed: float, elapsed: float
) -> Event:
    train_loss = sum(losses) / len(losses)
    return Event(
        "metrics",
        f"step {step}/{total_steps}: train loss {train_loss:.4f}",
        {
            "step": step,
            "total_steps": total_steps,
            "epoch": round(epoch, 4),
            "train_loss": train_loss,
            "learning_rate": lr,
            "examples_per_second": speed,
            "elapsed_seconds": elapsed,
        },
    )


def _eval_event(result: Evaluation, step: int, epoch: float) -> Event:
    return Event(
        "eval",
        f"step {step}: validation loss {result.loss:.4f}, accuracy {result.accuracy:.2%}",
        {"step": step, "epoch": round(epoch, 4), "val_loss": result.loss, "val_accuracy": result.accuracy},
    )
