"""The training loop: warmup then linear decay, regularizers, gradient clipping, periodic evaluation.

Plain on purpose: one function you can read top to bottom, each optimizer step in three phases (step,
evaluate or stop, checkpoint), then a resume point when one is due. It trains whatever parameters of
the model require grad (the method decided that, and a gradual-unfreezing schedule may widen it step
by step) and reports through events. A run resumed from a resume point's state continues at the next
step as if it had never stopped.
"""

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import nn

from tuning.batching import Batch, Encoded, batch_indices, collate, epoch_order, steps_per_epoch
from tuning.device import uses_bf16
from tuning.distribution import (
    SINGLE,
    Ranks,
    Share,
    gradient_sync,
    is_sharded,
    reshard,
    sharded_like,
    whole,
    whole_on_cpu,
)
from tuning.early_stopping import BestTracker
from tuning.errors import Cancelled, ResumeMismatch
from tuning.evaluate import Evaluation
from tuning.events import Event, EventSink, StopCheck, ignore_event, never_stop
from tuning.folded_evaluation import evaluations_fold, folded
from tuning.frozen_prefix import FrozenPrefix
from tuning.optim import learning_rate_at, make_optimizer, set_learning_rate, warmup_steps
from tuning.regularizers import Regularizer
from tuning.spec import CheckpointOptions, EarlyStopping, ResolvedHyperparameters
from tuning.tasks import Task
from tuning.training_state import TrainingState, capture_rng, restore_rng


class StepHook(Protocol):
    """Called before optimizer step `step` (1-based) of epoch `epoch` (0-based), e.g. to unfreeze."""

    def __call__(self, step: int, epoch: int) -> Event | None: ...


class CheckpointSink(Protocol):
    """Called with the model as trained so far, after optimizer step `step`; writes a checkpoint.

    `kept` lists the steps of the checkpoints it keeps: a resume point carries it, so that a resumed
    run drops the ones the uninterrupted run would have dropped.
    """

    kept: list[int]

    def __call__(self, step: int, epoch: float, evaluation: Evaluation | None) -> None: ...


class ResumePoints(Protocol):
    """Asked after each optimizer step whether a resume point is due; then handed the loop's state."""

    def due(self, step: int) -> bool: ...

    def __call__(self, state: TrainingState) -> object: ...


@dataclass(frozen=True)
class TrainResult:
    steps: int
    examples_seen: int
    trained_tokens: int
    train_loss: float  # mean over the last epoch's steps
    seconds: float
    eval_seconds: float  # of `seconds`, the evaluations'
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
    hp: ResolvedHyperparameters,
    *,
    task: Task,
    device: torch.device,
    optimizer_groups: list[dict[str, Any]],
    regularizers: Sequence[Regularizer] = (),
    before_step: StepHook | None = None,
    early_stopping: EarlyStopping | None = None,
    checkpoints: CheckpointOptions | None = None,
    save_checkpoint: CheckpointSink | None = None,
    resume_points: ResumePoints | None = None,
    resume_from: TrainingState | None = None,
    frozen_prefix: FrozenPrefix | None = None,
    on_event: EventSink = ignore_event,
    should_stop: StopCheck = never_stop,
    ranks: Ranks = SINGLE,
    rows_per_pass: int | None = None,
) -> TrainResult:
    """Train the parameters in `optimizer_groups` (see tuning.optim.parameter_groups).

    Each optimizer step is three phases: the step itself (schedule hook, learning rate, loss and
    update, a metrics event every `logging_steps`), evaluate or stop (every `eval_steps`, else at each
    epoch's end; with `early_stopping`, stop once its metric has not improved for `patience`
    evaluations and put the best evaluation's weights back), and checkpoint (`save_checkpoint` every
    `every_steps` steps or at each epoch's end). Then, when `resume_points` says one is due, the loop's
    state goes to it: after everything the step did, and for an epoch's last step after the epoch's
    evaluation and checkpoint. `resume_from`, such a state, continues at its next step: nothing of the
    steps before it (their events included) happens again. `frozen_prefix` (tuning.frozen_prefix), the
    job's frozen layers, brings its own views of the model and data: the frozen part runs without
    dropout and, with reuse, batches carry its outputs, cached again whenever the boundary moves.
    With several `ranks` (tuning.distribution), each process trains on its share of every batch and
    they stop together at rank 0's word; the caller gives the other ranks no sinks. `rows_per_pass`
    bounds the examples of one forward and backward: a larger share is trained in passes whose
    gradients add up before the step.
    """
    if frozen_prefix is not None:
        model, train_set = frozen_prefix.model, frozen_prefix.train_set
        validation_set = frozen_prefix.validation_set
    per_epoch = steps_per_epoch(len(train_set), hp.batch_size)
    stepped_model = ranks.wrap(model)  # what the step's forward and backward run through
    optimizer = make_optimizer(optimizer_groups, hp)
    named = _named_parameters(optimizer_groups)
    trainable: list[torch.Tensor] = [parameter for _, parameter in named]
    shuffle = torch.Generator().manual_seed(hp.seed)
    bf16 = uses_bf16(device, hp.mixed_precision)  # the forward's autocast; weights stay float32
    # Grouping by length cuts padding; on a small corpus of templated text it made batches of one
    # template and slowed learning, and causal_lm has packing for its padding instead.
    grouped = hp.group_by_length if hp.group_by_length is not None else task.kind != "causal_lm"
    stopper = BestTracker(early_stopping, trainable) if early_stopping is not None else None
    evaluations = Evaluations(
        model,
        validation_set,
        task,
        hp.batch_size,
        device,
        per_epoch,
        stopper,
        on_event,
        should_stop,
        mixed_precision=bf16,  # evaluated in the precision it trains in (tuning.evaluate)
        folds=evaluations_fold(model, device),
        last_step=hp.epochs * per_epoch,
    )
    progress = Progress(hp, per_epoch, on_event)
    loop = LoopState(optimizer, named, shuffle, stopper, evaluations, progress, save_checkpoint, per_epoch)

    def checkpoint(step: int) -> None:
        if save_checkpoint is not None:
            save_checkpoint(step, step / per_epoch, evaluations.taken_at(step))

    def resume_point(step: int, epoch: int, batches_done: int, order: list[int] | None) -> None:
        due = resume_points is not None and resume_points.due(step)
        if is_sharded(model):  # every process gathers the whole state for rank 0's point
            due = ranks.agree(due)
        if due:
            state = loop.state(step, epoch, batches_done, order)
            if resume_points is not None:
                resume_points(state)

    step, first_epoch, skip, order = 0, 0, 0, None
    if resume_from is not None:
        loop.resume(resume_from, before_step)
        step, first_epoch = resume_from.step, resume_from.epoch
        skip, order = resume_from.batches_done, resume_from.order
    if frozen_prefix is not None:  # after a resume's schedule: the boundary is where its stage left it
        frozen_prefix.follow()
    if resume_from is None:
        evaluations.run(0)
        loop.initial_eval = evaluations.latest
    model.train()
    for epoch in range(first_epoch, hp.epochs):
        if stopper is not None and stopper.should_stop:
            break
        if skip == 0:
            progress.new_epoch()
            order = epoch_order(train_set, hp.batch_size, shuffle, group_by_length=grouped)
        assert order is not None
        for done, indices in enumerate(batch_indices(order, hp.batch_size, skip=skip), start=skip + 1):
            if ranks.agree(should_stop()):
                raise Cancelled()
            step += 1
            # Step: the schedule first, since a stage moves the frozen layers' boundary, then the batch.
            if before_step is not None and (event := before_step(step, epoch)) is not None:
                on_event(event)
                if frozen_prefix is not None:
                    frozen_prefix.follow()
            batch = collate(train_set, indices)
            passes = ranks.shares(batch, causal_lm=task.kind == "causal_lm", rows_per_pass=rows_per_pass)
            lr = learning_rate_at(
                step, peak=hp.learning_rate, total_steps=progress.total_steps, warmup=progress.warmup
            )
            set_learning_rate(optimizer, lr)
            losses = optimizer_step(
                stepped_model,
                optimizer,
                trainable,
                batch,
                task,
                regularizers,
                hp.max_grad_norm,
                device,
                bf16,
                passes=passes,
            )
            losses = replace(losses, task=ranks.batch_loss(losses.task))
            progress.stepped(step, batch, losses, lr, evaluations.seconds)
            # Evaluate or stop.
            if hp.eval_steps is not None and step % hp.eval_steps == 0:
                evaluations.run(step)
            # Checkpoint.
            if _checkpoint_due_after_step(step, checkpoints, hp, per_epoch):
                checkpoint(step)
            if stopper is not None and stopper.should_stop:
                break
            # Resume point (the epoch's last step's waits for the epoch's end).
            if done < per_epoch:
                resume_point(step, epoch, done, order)
        skip = 0
        # The epoch's end: its evaluation (unless a step just took one), then its checkpoint.
        if hp.eval_steps is None and evaluations.step != step:
            evaluations.run(step)
        if _checkpoint_due_after_epoch(step, checkpoints, hp):
            checkpoint(step)
        resume_point(step, epoch + 1, 0, None)
    if is_sharded(model):  # early stopping may write the best weights into the shards
        reshard(model)
    return _result(step, loop.initial_eval, evaluations, stopper, progress, on_event)


class LoopState:
    """What a resume point holds of the loop: the trainable tensors, the optimizer, the data order, the
    random streams, and the counters and histories of progress, evaluations, early stopping, checkpoints.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        named: list[tuple[str, nn.Parameter]],
        shuffle: torch.Generator,
        stopper: BestTracker | None,
        evaluations: "Evaluations",
        progress: "Progress",
        checkpoints: CheckpointSink | None,
        per_epoch: int,
    ) -> None:
        self.optimizer, self.named, self.shuffle = optimizer, named, shuffle
        self.stopper, self.evaluations, self.progress = stopper, evaluations, progress
        self.checkpoints, self.per_epoch = checkpoints, per_epoch
        self.initial_eval: Evaluation | None = None

    def state(self, step: int, epoch: int, batches_done: int, order: list[int] | None) -> TrainingState:
        stopper = self.stopper
        return TrainingState(
            step=step,
            epoch=epoch,
            batches_done=batches_done,
            epochs_done=step / self.per_epoch,
            loop={
                "progress": self.progress.state(),
                "evaluations": self.evaluations.state(),
                "initial_eval": _evaluation_json(self.initial_eval),
                "early_stopping": stopper.state() if stopper is not None else None,
                "checkpoints_kept": list(self.checkpoints.kept) if self.checkpoints is not None else [],
                "trainable_now": [name for name, parameter in self.named if parameter.requires_grad],
            },
            # Whole tensors, also of a sharded model: a point resumes on any number of processes.
            trainable={
                name: whole(parameter.detach()).to("cpu", copy=True) for name, parameter in self.named
            },
            optimizer=_whole_optimizer_state(self.optimizer.state_dict()),
            rng=capture_rng(self.shuffle),
            order=order if batches_done else None,
            best={name: whole(saved) for (name, _), saved in zip(self.named, stopper.saved, strict=True)}
            if stopper is not None and stopper.saved
            else {},
        )

    def resume(self, state: TrainingState, before_step: StepHook | None) -> None:
        """Put the loop where `state` left it: weights, optimizer, histories, schedule, random streams."""
        self.restore(state)
        if before_step is not None:  # the schedule where step k left it; its event was step k's
            before_step(state.step, (state.step - 1) // self.per_epoch)
        now = [name for name, parameter in self.named if parameter.requires_grad]
        if now != state.loop["trainable_now"]:
            raise ResumeMismatch(
                f"at step {state.step} the resume point trained {len(state.loop['trainable_now'])} tensors, "
                f"the schedule now says {len(now)}"
            )
        restore_rng(state.rng, self.shuffle)  # last: nothing draws from them before the next step

    def restore(self, state: TrainingState) -> None:
        names = [name for name, _ in self.named]
        if sorted(state.trainable) != sorted(names):
            missing, extra = set(names) - set(state.trainable), set(state.trainable) - set(names)
            raise ResumeMismatch(
                "the resume point's tensors are not this job's trainable set: "
                f"missing {sorted(missing)[:5]}, unknown {sorted(extra)[:5]}"
            )
        with torch.no_grad():
            for name, parameter in self.named:
                stored = state.trainable[name]
                if stored.shape != parameter.shape:
                    raise ResumeMismatch(
                        f"the resume point's {name} is {tuple(stored.shape)}, not {tuple(parameter.shape)}"
                    )
                parameter.copy_(sharded_like(stored, parameter))
        self.optimizer.load_state_dict(_sharded_optimizer_state(state.optimizer, self.optimizer))
        loop = state.loop
        self.progress.restore(loop["progress"])
        self.evaluations.restore(loop["evaluations"])
        self.initial_eval = _evaluation(loop["initial_eval"])
        if self.stopper is not None:
            saved = []
            if state.best:
                saved = [sharded_like(state.best[name], parameter) for name, parameter in self.named]
            self.stopper.restore_state(loop["early_stopping"], saved)
        if self.checkpoints is not None:
            self.checkpoints.kept = list(loop["checkpoints_kept"])


def _whole_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's state_dict with each sharded moment gathered whole: one process's format."""
    moments = {
        index: {key: whole_on_cpu(value) for key, value in per_parameter.items()}
        for index, per_parameter in state["state"].items()
    }
    return {**state, "state": moments}


def _sharded_optimizer_state(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A resume point's optimizer state cut to this process's shards (the same state when unsharded)."""
    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    moments = {}
    for index, per_parameter in state["state"].items():
        parameter = parameters[int(index)]
        moments[index] = {
            key: sharded_like(value, parameter) if _moment_of(value, parameter) else value
            for key, value in per_parameter.items()
        }
    return {**state, "state": moments}


def _moment_of(value: object, parameter: torch.Tensor) -> bool:
    """Whether an optimizer state entry is shaped as its parameter (Adam's moments; not its step count)."""
    return isinstance(value, torch.Tensor) and value.shape == parameter.shape


def _named_parameters(optimizer_groups: list[dict[str, Any]]) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) in the optimizer's order; parameter_groups names them, other callers may not."""
    named: list[tuple[str, nn.Parameter]] = []
    for index, group in enumerate(optimizer_groups):
        names = group.get("names") or [f"group{index}.{i}" for i in range(len(group["params"]))]
        named.extend(zip(names, group["params"], strict=True))
    return named


def _evaluation_json(evaluation: Evaluation | None) -> dict[str, Any] | None:
    return evaluation.as_json() if evaluation is not None else None


def _evaluation(stored: dict[str, Any] | None) -> Evaluation | None:
    return Evaluation.from_json(stored) if stored is not None else None


class Evaluations:
    """The validation runs of one training: the latest, the step it was taken at, the time they took."""

    def __init__(
        self,
        model: nn.Module,
        validation_set: Encoded | None,
        task: Task,
        batch_size: int,
        device: torch.device,
        per_epoch: int,
        stopper: BestTracker | None,
        on_event: EventSink,
        should_stop: StopCheck,
        *,
        mixed_precision: bool,
        folds: bool,
        last_step: int,
    ) -> None:
        self.model, self.validation_set, self.task = model, validation_set, task
        self.batch_size, self.device, self.per_epoch = batch_size, device, per_epoch
        self.stopper, self.on_event, self.should_stop = stopper, on_event, should_stop
        self.mixed_precision = mixed_precision  # the forwards under bf16 autocast
        self.folds = folds  # LoRA's updates folded into copies of their weights (tuning.folded_evaluation)
        self.last_step = last_step
        self.latest: Evaluation | None = None  # None when there is no validation set
        self.step = 0
        self.seconds = 0.0  # kept out of examples/s, which should describe training speed

    @property
    def latest_exact(self) -> bool:
        """Whether the latest evaluation ran as the artifact runs, in float32 and unfolded: every one when
        neither mixed precision nor folding applies, else the last step's."""
        return not (self.mixed_precision or self.folds) or self.step == self.last_step

    def run(self, step: int) -> None:
        """Evaluate at `step` (0: the untrained start), and let early stopping observe it: in the training's
        precision and folded, but exactly at the last step, so that the result a job reports is what its
        artifact reproduces."""
        self.step = step
        if self.validation_set is None:
            return
        result = self._evaluate(exact=self.latest_exact)
        self.on_event(_eval_event(result, step, step / self.per_epoch))
        if (
            step > 0
            and self.stopper is not None
            and (event := self.stopper.observe(step, result)) is not None
        ):
            self.on_event(event)
        self.latest = result

    def exactly(self) -> Evaluation | None:
        """The model as it is now, evaluated as the artifact runs (no event: its step's evaluation was
        announced)."""
        return None if self.validation_set is None else self._evaluate(exact=True)

    def _evaluate(self, *, exact: bool) -> Evaluation:
        assert self.validation_set is not None
        started = time.perf_counter()
        with folded(self.model, self.folds and not exact):
            result = self.task.evaluate(
                self.model,
                self.validation_set,
                batch_size=self.batch_size,
                device=self.device,
                should_stop=self.should_stop,
                mixed_precision=self.mixed_precision and not exact,
            )
        self.seconds += time.perf_counter() - started
        return result

    def taken_at(self, step: int) -> Evaluation | None:
        return self.latest if self.step == step else None

    def state(self) -> dict[str, Any]:
        return {"latest": _evaluation_json(self.latest), "step": self.step, "seconds": self.seconds}

    def restore(self, state: dict[str, Any]) -> None:
        self.latest, self.step, self.seconds = _evaluation(state["latest"]), state["step"], state["seconds"]


class Progress:
    """What the metrics events report: losses since the last one, examples, tokens, speed."""

    def __init__(self, hp: ResolvedHyperparameters, per_epoch: int, on_event: EventSink) -> None:
        self.total_steps = hp.epochs * per_epoch
        self.warmup = warmup_steps(self.total_steps, hp.warmup_ratio)
        self.logging_steps, self.per_epoch, self.on_event = hp.logging_steps, per_epoch, on_event
        self.started = time.perf_counter()
        self.examples_seen = self.trained_tokens = 0
        self.window: list[StepLosses] = []  # losses since the last metrics event
        self.epoch_losses: list[torch.Tensor | float] = []

    def new_epoch(self) -> None:
        self.epoch_losses = []

    def state(self) -> dict[str, Any]:
        return {
            "examples_seen": self.examples_seen,
            "trained_tokens": self.trained_tokens,
            "window": [[float(losses.task), _floats(losses.penalties)] for losses in self.window],
            "epoch_losses": [float(loss) for loss in self.epoch_losses],
            "elapsed_seconds": time.perf_counter() - self.started,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.examples_seen, self.trained_tokens = state["examples_seen"], state["trained_tokens"]
        self.window = [StepLosses(task, penalties) for task, penalties in state["window"]]
        self.epoch_losses = list(state["epoch_losses"])
        self.started = time.perf_counter() - state["elapsed_seconds"]  # elapsed time goes on counting

    def stepped(self, step: int, batch: Batch, losses: "StepLosses", lr: float, eval_seconds: float) -> None:
        self.window.append(losses)
        self.epoch_losses.append(losses.task)
        self.examples_seen += len(batch["attention_mask"])
        self.trained_tokens += int(batch["attention_mask"].sum())
        if step % self.logging_steps == 0 or step == self.total_steps:
            elapsed = time.perf_counter() - self.started
            speed = self.examples_seen / max(elapsed - eval_seconds, 1e-9)
            epoch = step / self.per_epoch
            event = _metrics_event(step, self.total_steps, epoch, self.window, lr, speed, elapsed)
            # The running totals ride along, so the job shows them while it trains, not only at its end.
            event.data.update(examples_seen=self.examples_seen, trained_tokens=self.trained_tokens)
            self.on_event(event)
            self.window = []


def _checkpoint_due_after_step(
    step: int, checkpoints: CheckpointOptions | None, hp: ResolvedHyperparameters, per_epoch: int
) -> bool:
    every = checkpoints.every_steps if checkpoints is not None else None
    # A checkpoint due on the epoch's last step waits for the end-of-epoch evaluation.
    evaluated_next = hp.eval_steps is None and step % per_epoch == 0
    return every is not None and step % every == 0 and not evaluated_next


def _checkpoint_due_after_epoch(
    step: int, checkpoints: CheckpointOptions | None, hp: ResolvedHyperparameters
) -> bool:
    if checkpoints is None:
        return False
    every = checkpoints.every_steps
    return every is None or (step % every == 0 and hp.eval_steps is None)


def _result(
    step: int,
    initial_eval: Evaluation | None,
    evaluations: Evaluations,
    stopper: BestTracker | None,
    progress: Progress,
    on_event: EventSink,
) -> TrainResult:
    """The result describes the model as returned: the best evaluation's under early stopping, else the
    last step's (evaluated now if the loop did not end on an evaluation)."""
    restores = stopper is not None and stopper.best_step is not None
    if evaluations.step != step and not restores:
        evaluations.run(step)
    final_eval, best_step = evaluations.latest, None
    if stopper is not None and stopper.best_step is not None:
        best_step = stopper.restore()
        final_eval = stopper.best_eval
        if not (best_step == evaluations.step and evaluations.latest_exact):
            final_eval = evaluations.exactly()  # reported as the artifact runs (Evaluations.run)
        on_event(
            Event(
                "message",
                f"published weights are step {best_step}'s, the best {stopper.metric}",
                {"best_step": best_step},
            )
        )
    elif not evaluations.latest_exact:
        final_eval = evaluations.exactly()
    return TrainResult(
        steps=step,
        examples_seen=progress.examples_seen,
        trained_tokens=progress.trained_tokens,
        train_loss=sum(float(loss) for loss in progress.epoch_losses) / len(progress.epoch_losses),
        seconds=time.perf_counter() - progress.started,
        eval_seconds=evaluations.seconds,
        initial_eval=initial_eval,
        final_eval=final_eval,
        best_step=best_step,
        stopped_early=stopper is not None and stopper.should_stop,
    )


@dataclass(frozen=True)
class StepLosses:
    """One step's losses: 0-d tensors on the device until a metrics event (or resume point) reads them."""

    task: torch.Tensor | float
    penalties: dict[str, torch.Tensor | float]  # unweighted, by regularizer name


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainable: Iterable[torch.Tensor],
    batch: Batch,
    task: Task,
    regularizers: Sequence[Regularizer],
    max_grad_norm: float | None,
    device: torch.device,
    bf16: bool,
    *,
    passes: Sequence[Share] = (),
) -> StepLosses:
    """One optimizer step on one batch: the loop's, and what benchmarks/step.py times against PEFT.

    `passes` (tuning.distribution.Ranks.shares): this process's parts of `batch`, each a forward and
    backward whose gradients add up before the step; none: `batch` in one pass.
    """
    optimizer.zero_grad(set_to_none=True)
    task_loss: torch.Tensor | float = 0.0
    penalties: dict[str, torch.Tensor | float] = {}
    parts = passes or [Share(batch, 1.0, 1.0)]
    for index, part in enumerate(parts):
        with gradient_sync(model, last=index == len(parts) - 1):
            part_loss, logits = task.loss(model, part.batch, device, mixed_precision=bf16)
            loss = part_loss if part.loss_scale == 1.0 else part_loss * part.loss_scale
            if index == 0:  # penalties on the weights (kl, on the data, splits no batch): once a step
                for regularizer in regularizers:
                    penalty = regularizer.penalty(model, part.batch, logits)
                    loss = loss + regularizer.weight * penalty
                    penalties[regularizer.name] = penalty.detach()
            # The graph keeps what the backward needs; the logits themselves (a causal LM's are batch ×
            # length × vocabulary floats, the step's largest tensor) must not live through it as well.
            del logits
            loss.backward()
        task_loss = task_loss + part.weighted(part_loss.detach())
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    # Detached, not .item(): reading a GPU value waits for the device; they are read at logging steps.
    return StepLosses(task_loss, penalties)


def _floats(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
    return {name: float(value) for name, value in values.items()}


def _metrics_event(
    step: int,
    total_steps: int,
    epoch: float,
    window: list[StepLosses],
    lr: float,
    speed: float,
    elapsed: float,
) -> Event:
    train_loss = sum(float(losses.task) for losses in window) / len(window)
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
        data["penalties"] = {
            name: sum(float(w.penalties[name]) for w in window) / len(window) for name in names
        }
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
