"""The training loop: warmup then linear decay, regularizers, gradient clipping, periodic evaluation.

Plain on purpose: one function you can read top to bottom. It trains whatever parameters of the
model require grad (the method decided that, and a gradual-unfreezing schedule may widen it step
by step) and reports through events.
"""

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from tuning.batching import Batch, Encoded, shuffled_batches, steps_per_epoch
from tuning.early_stopping import BestTracker
from tuning.errors import Cancelled
from tuning.evaluate import Evaluation
from tuning.events import Event, EventSink, StopCheck, ignore_event, never_stop
from tuning.optim import learning_rate_at, make_optimizer, set_learning_rate, warmup_steps
from tuning.regularizers import Regularizer
from tuning.spec import CheckpointOptions, EarlyStopping, Hyperparameters
from tuning.tasks import Task


class StepHook(Protocol):
    """Called before optimizer step `step` (1-based) of epoch `epoch` (0-based), e.g. to unfreeze."""

    def __call__(self, step: int, epoch: int) -> Event | None: ...


class CheckpointSink(Protocol):
    """Called with the model as trained so far, after optimizer step `step`; writes a checkpoint."""

    def __call__(self, step: int, epoch: float, evaluation: Evaluation | None) -> None: ...


@dataclass(frozen=True)
class TrainResult:
    steps: int
    examples_seen: int
    trained_tokens: int
    train_loss: float  # mean over the last epoch's steps
    seconds: float
    initial_eval: Evaluation | None  # step 0: the base with its untrained head
    final_eval: Evaluation | None  # of the model as returned: the best one under early stopping
    best_step: int | None = None  # early stopping: the step whose weights were restored
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    """Seed Python and torch; call before building the model so the new head starts the same."""
    random.seed(seed)
    torch.manual_seed(seed)


def train(
    model: nn.Module,
    train_set: Encoded,
    validation_set: Encoded | None,
    hp: Hyperparameters,
    *,
    task: Task,
    device: torch.device,
    optimizer_groups: list[dict[str, Any]],
    regularizers: Sequence[Regularizer] = (),
    before_step: StepHook | None = None,
    early_stopping: EarlyStopping | None = None,
    checkpoints: CheckpointOptions | None = None,
    save_checkpoint: CheckpointSink | None = None,
    on_event: EventSink = ignore_event,
    should_stop: StopCheck = never_stop,
) -> TrainResult:
    """Train the parameters in `optimizer_groups` (see tuning.optim.parameter_groups).

    With `early_stopping`, training stops once its metric has not improved for `patience`
    evaluations, and the best evaluation's weights are put back before returning. With
    `checkpoints`, `save_checkpoint` is called every `every_steps` steps or at each epoch's end.
    """
    per_epoch = steps_per_epoch(len(train_set), hp.batch_size)
    total_steps = hp.epochs * per_epoch
    warmup = warmup_steps(total_steps, hp.warmup_ratio)
    optimizer = make_optimizer(optimizer_groups, hp)
    trainable = [p for group in optimizer_groups for p in group["params"]]
    shuffle = torch.Generator().manual_seed(hp.seed)

    eval_seconds = 0.0  # kept out of examples/s, which should describe training speed

    def run_eval(step: int) -> Evaluation | None:
        nonlocal eval_seconds
        if validation_set is None:
            return None
        eval_started = time.perf_counter()
        result = task.evaluate(
            model, validation_set, batch_size=hp.batch_size, device=device, should_stop=should_stop
        )
        eval_seconds += time.perf_counter() - eval_started
        on_event(_eval_event(result, step, step / per_epoch))
        if step > 0 and best is not None and (event := best.observe(step, result)) is not None:
            on_event(event)
        return result

    def checkpoint(step: int, evaluation: Evaluation | None) -> None:
        if save_checkpoint is not None:
            save_checkpoint(step, step / per_epoch, evaluation)

    best = BestTracker(early_stopping, trainable) if early_stopping is not None else None
    every = checkpoints.every_steps if checkpoints is not None else None
    started = time.perf_counter()
    initial_eval = final_eval = run_eval(0)
    last_eval_step = 0
    step = examples_seen = trained_tokens = 0
    window: list[StepLosses] = []  # losses since the last metrics event
    epoch_losses: list[float] = []
    model.train()
    for epoch in range(hp.epochs):
        if best is not None and best.should_stop:
            break
        epoch_losses = []
        for batch in shuffled_batches(train_set, hp.batch_size, shuffle):
            if should_stop():
                raise Cancelled()
            step += 1
            if before_step is not None and (event := before_step(step, epoch)) is not None:
                on_event(event)
            lr = learning_rate_at(step, peak=hp.learning_rate, total_steps=total_steps, warmup=warmup)
            set_learning_rate(optimizer, lr)
            losses = _optimizer_step(
                model, optimizer, trainable, batch, task, regularizers, hp.max_grad_norm, device
            )
            window.append(losses)
            epoch_losses.append(losses.task)
            examples_seen += len(batch["input_ids"])
            trained_tokens += int(batch["attention_mask"].sum())
            if step % hp.logging_steps == 0 or step == total_steps:
                elapsed = time.perf_counter() - started
                speed = examples_seen / max(elapsed - eval_seconds, 1e-9)
                on_event(_metrics_event(step, total_steps, step / per_epoch, window, lr, speed, elapsed))
                window = []
            if hp.eval_steps is not None and step % hp.eval_steps == 0:
                final_eval, last_eval_step = run_eval(step), step
            # A checkpoint due on the epoch's last step waits for the end-of-epoch evaluation.
            evaluated_next = hp.eval_steps is None and step % per_epoch == 0
            if every is not None and step % every == 0 and not evaluated_next:
                checkpoint(step, final_eval if last_eval_step == step else None)
            if best is not None and best.should_stop:
                break
        if hp.eval_steps is None and last_eval_step != step:
            final_eval, last_eval_step = run_eval(step), step
        if checkpoints is not None and (every is None or (step % every == 0 and hp.eval_steps is None)):
            checkpoint(step, final_eval if last_eval_step == step else None)
    if last_eval_step != step and not (best is not None and best.best_step is not None):
        # The reported result must describe the model that gets exported.
        final_eval = run_eval(step)
    best_step = None
    if best is not None and best.best_step is not None:
        best_step = best.restore()
        final_eval = best.best_eval
        on_event(
            Event(
                "message",
                f"published weights are step {best_step}'s, the best {best.metric}",
                {"best_step": best_step},
            )
        )
    return TrainResult(
        steps=step,
        examples_seen=examples_seen,
        trained_tokens=trained_tokens,
        train_loss=sum(epoch_losses) / len(epoch_losses),
        seconds=time.perf_counter() - started,
        initial_eval=initial_eval,
        final_eval=final_eval,
        best_step=best_step,
        stopped_early=best is not None and best.should_stop,
    )


@dataclass(frozen=True)
class StepLosses:
    task: float
    penalties: dict[str, float]  # unweighted, by regularizer name


def _optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainable: Iterable[torch.Tensor],
    batch: Batch,
    task: Task,
    regularizers: Sequence[Regularizer],
    max_grad_norm: float | None,
    device: torch.device,
) -> StepLosses:
    task_loss, logits = task.loss(model, batch, device, mixed_precision=True)
    loss = task_loss
    penalties: dict[str, float] = {}
    for regularizer in regularizers:
        penalty = regularizer.penalty(model, batch, logits)
        loss = loss + regularizer.weight * penalty
        penalties[regularizer.name] = penalty.item()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    return StepLosses(task_loss.item(), penalties)


def _metrics_event(
    step: int,
    total_steps: int,
    epoch: float,
    window: list[StepLosses],
    lr: float,
    speed: float,
    elapsed: float,
) -> Event:
    train_loss = sum(losses.task for losses in window) / len(window)
    data: dict[str, Any] = {
        "step": step,
        "total_steps": total_steps,
        "epoch": round(epoch, 4),
        "train_loss": train_loss,  # the task loss alone, comparable across jobs
        "learning_rate": lr,
        "examples_per_second": speed,
        "elapsed_seconds": elapsed,
    }
    message = f"step {step}/{total_steps}: train loss {train_loss:.4f}"
    if window[0].penalties:
        names = window[0].penalties
        data["penalties"] = {name: sum(w.penalties[name] for w in window) / len(window) for name in names}
        message += "".join(f", {name} {value:.4g}" for name, value in data["penalties"].items())
    return Event("metrics", message, data)


def _eval_event(result: Evaluation, step: int, epoch: float) -> Event:
    shown = ", ".join(f"{name} {value:.4g}" for name, value in result.metrics.items())
    return Event(
        "eval",
        f"step {step}: validation {shown}",
        {
            "step": step,
            "epoch": round(epoch, 4),
            **{f"val_{name}": value for name, value in result.metrics.items()},
        },
    )
