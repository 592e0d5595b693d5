"""`tuning.run`: one fine-tuning job from data files to an artifact folder, callable from a shell.

Order matters for the user: cheap checks first (base model known, data valid, labels consistent),
so a bad job fails in a second, not after the model has loaded; the artifact is written only once
training has finished, so a failed or cancelled run leaves `out_dir` as it found it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuning.compat import check_spec_for_model
from tuning.data import AnyExample, Label, read_data_file
from tuning.errors import SpecError
from tuning.events import Event, EventSink, StopCheck, ignore_event, never_stop
from tuning.models import resolve_base_model
from tuning.spec import JobSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tuning.artifacts import TrainedJob
    from tuning.build import Built
    from tuning.checkpoints import CheckpointSink
    from tuning.pretrained import PretrainedSnapshot
    from tuning.regularizers import Regularizer
    from tuning.task_model import TaskModel
    from tuning.tasks import TaskData
    from tuning.train import StepHook, TrainResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    metrics: dict[str, float]
    examples_seen: int
    trained_tokens: int
    steps: int
    files: list[str]  # names written into out_dir


def run(
    spec: JobSpec,
    out_dir: Path,
    *,
    training_path: Path,
    validation_path: Path | None = None,
    fisher_path: Path | None = None,
    model_dirs: Sequence[Path] = (),
    start_from: Path | None = None,
    on_checkpoint: CheckpointSink | None = None,
    on_event: EventSink = ignore_event,
    should_stop: StopCheck = never_stop,
) -> RunResult:
    """Fine-tune `spec.base_model` on `training_path` and write the artifact into `out_dir`.

    `fisher_path` is the source-task file of an `ewc` regularizer; `start_from` a checkpoint's
    artifact folder whose trained tensors the job starts from (`from_checkpoint`). With
    `spec.checkpoints`, each checkpoint is written as an artifact and handed to `on_checkpoint`.
    Raises DataError, SpecError, ModelNotFound, or Cancelled when `should_stop()` turns true.
    """
    from tuning.artifacts import write_artifact

    fitted = fit(
        spec,
        training_path=training_path,
        validation_path=validation_path,
        fisher_path=fisher_path,
        model_dirs=model_dirs,
        start_from=start_from,
        checkpoints_dir=out_dir.with_name(out_dir.name + "-checkpoints"),
        on_checkpoint=on_checkpoint,
        on_event=on_event,
        should_stop=should_stop,
    )
    on_event(Event("message", f"exporting the artifact to {out_dir.name}", {}))
    files = write_artifact(out_dir, fitted.job)
    result = fitted.result
    return RunResult(
        dict(fitted.job.metrics), result.examples_seen, result.trained_tokens, result.steps, files
    )


@dataclass(frozen=True)
class Fitted:
    job: TrainedJob  # the trained model, on the CPU in eval mode, and what its artifact needs
    result: TrainResult


def fit(
    spec: JobSpec,
    *,
    training_path: Path,
    validation_path: Path | None = None,
    fisher_path: Path | None = None,
    model_dirs: Sequence[Path] = (),
    start_from: Path | None = None,
    checkpoints_dir: Path | None = None,
    on_checkpoint: CheckpointSink | None = None,
    on_event: EventSink = ignore_event,
    should_stop: StopCheck = never_stop,
) -> Fitted:
    """Everything `run` does but writing the artifact: the trained model stays in memory."""
    # torch and transformers load here, not at import: the API imports tuning without them.
    from tuning.artifacts import TrainedJob
    from tuning.build import apply_spec_method
    from tuning.checkpoints import CheckpointWriter, load_checkpoint_weights
    from tuning.device import pick_device
    from tuning.pretrained import PretrainedSnapshot
    from tuning.tasks import resolved_spec, task_for
    from tuning.train import seed_everything, train

    base_path = resolve_base_model(spec.base_model, model_dirs)
    check_spec_for_model(spec, base_path)
    training = read_data_file(training_path, param="training_file")
    task = task_for(spec, training.format)
    spec = resolved_spec(spec, task)
    validation = read_data_file(validation_path, param="validation_file") if validation_path else None
    data = task.check_data(training, validation)
    fisher_examples = _read_fisher_data(spec, fisher_path)
    on_event(_data_summary(data))

    hp = spec.hyperparameters
    seed_everything(hp.seed)  # before the model is built: the new head's init is part of the run
    device = pick_device()
    on_event(Event("message", f"loading {spec.base_model} on {device.type}", {"device": device.type}))
    task_model = task.load(spec, base_path, data.labels)
    model: nn.Module = task_model.model  # typed as a plain module: transformers' .to() stubs are odd
    model.to(device)
    # What the regularizers compare against is taken before the method rewrites the model.
    before_method = _before_method(spec, task_model, fisher_examples, device, on_event)
    built = apply_spec_method(spec, task_model)
    model.to(device)
    method_trainable = [p for p in model.parameters() if p.requires_grad]
    snapshot = PretrainedSnapshot.take(model, task_model.pretrained)
    if start_from is not None:
        on_event(load_checkpoint_weights(model, start_from))

    train_set = task.encode(task_model, spec, data.train, data.labels)
    validation_set = task.encode(task_model, spec, data.validation, data.labels) if data.validation else None
    on_event(_training_started(model, built))

    def trained_job(metrics: dict[str, float]) -> TrainedJob:
        return TrainedJob(
            spec=spec,
            model=model,
            tokenizer=task_model.tokenizer,
            head_modules=task_model.head_modules,
            labels=data.labels,
            base_model_path=base_path,
            metrics=metrics,
            applied=built.applied,
            snapshot=snapshot,
            pretrained=task_model.pretrained,
            tokenizer_changed=built.tokenizer_changed,
        )

    checkpoints = None
    if spec.checkpoints is not None and checkpoints_dir is not None:
        checkpoints = CheckpointWriter(spec.checkpoints, checkpoints_dir, trained_job, on_checkpoint)
    result = train(
        model,
        train_set,
        validation_set,
        hp,
        task=task,
        device=device,
        optimizer_groups=_optimizer_groups(spec, model, built),
        regularizers=_regularizers(spec, model, built, snapshot, before_method),
        before_step=_unfreeze_schedule(spec, model, built, len(train_set)),
        early_stopping=spec.early_stopping,
        checkpoints=spec.checkpoints if checkpoints is not None else None,
        save_checkpoint=checkpoints,
        on_event=on_event,
        should_stop=should_stop,
    )
    for parameter in method_trainable:  # a schedule may have stopped short of unfreezing them all
        parameter.requires_grad_(True)
    metrics = _final_metrics(result)
    logger.info("%s: %d steps in %.1f s, metrics %s", spec.base_model, result.steps, result.seconds, metrics)
    model.to("cpu").eval()
    snapshot = snapshot.to("cpu")
    return Fitted(trained_job(metrics), result)


def _read_fisher_data(spec: JobSpec, fisher_path: Path | None) -> list[AnyExample]:
    ewc = spec.regularizers.ewc
    if ewc is None:
        return []
    if fisher_path is None:
        raise SpecError(
            "ewc needs the source-task file named by fisher_file", param="regularizers.ewc.fisher_file"
        )
    data = read_data_file(fisher_path, param="regularizers.ewc.fisher_file")
    return data.examples[: ewc.fisher_examples]


@dataclass
class BeforeMethod:
    """What the regularizers compare against, taken before the method rewrote the model."""

    reference_model: nn.Module | None  # kl: a frozen copy
    fisher: dict[str, torch.Tensor] | None  # ewc: diagonal Fisher by pretrained parameter name


def _before_method(
    spec: JobSpec,
    task_model: TaskModel,
    fisher_examples: Sequence[AnyExample],
    device: torch.device,
    on_event: EventSink,
) -> BeforeMethod:
    import copy

    reference = None
    if spec.regularizers.kl is not None:
        reference = copy.deepcopy(task_model.model).eval().requires_grad_(False)
    fisher = None
    if spec.regularizers.ewc is not None:
        from tuning.regularizers.ewc import estimate_fisher

        texts = [example.text for example in fisher_examples if hasattr(example, "text")]
        fisher, event = estimate_fisher(task_model, texts, device=device)
        on_event(event)
    return BeforeMethod(reference, fisher)


def _optimizer_groups(spec: JobSpec, model: nn.Module, built: Built) -> list[dict[str, Any]]:
    from tuning.optim import parameter_groups

    scales = dict(built.applied.lr_scales)
    if spec.layer_lr_decay is not None:
        from tuning.parts.layer_lr import layer_lr_scales

        for name, scale in layer_lr_scales(model, built.layers, spec.layer_lr_decay.decay).items():
            scales[name] = scales.get(name, 1.0) * scale
    return parameter_groups(model, spec.hyperparameters.weight_decay, scales)


def _regularizers(
    spec: JobSpec, model: nn.Module, built: Built, snapshot: PretrainedSnapshot, before: BeforeMethod
) -> list[Regularizer]:
    from tuning.regularizers import RegularizerContext, make_regularizers

    method_deviations = built.applied.deviations

    def deviations() -> Iterator[tuple[str, torch.Tensor]]:
        yield from snapshot.deviations(model)
        if method_deviations is not None:
            yield from method_deviations()

    new = [
        (name, parameter)
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and name not in built.task_model.pretrained
    ]
    context = RegularizerContext(deviations, new, before.reference_model, before.fisher)
    return make_regularizers(spec.regularizers, context)


def _unfreeze_schedule(spec: JobSpec, model: nn.Module, built: Built, examples: int) -> StepHook | None:
    if spec.gradual_unfreeze is None:
        return None
    from tuning.batching import steps_per_epoch
    from tuning.parts.unfreeze import UnfreezeSchedule

    per_epoch = steps_per_epoch(examples, spec.hyperparameters.batch_size)
    return UnfreezeSchedule(model, built.layers, spec.gradual_unfreeze, steps_per_epoch=per_epoch)


def _data_summary(data: TaskData) -> Event:
    counts: Counter[Label] = Counter()
    for example in data.train:
        counts.update(getattr(example, "labels", None) or [getattr(example, "label", None)])
    labelled = f", {len(data.labels)} labels" if data.labels else ""
    return Event(
        "message",
        f"{len(data.train)} training and {len(data.validation)} validation examples{labelled}",
        {
            "training_examples": len(data.train),
            "validation_examples": len(data.validation),
            "labels": list(data.labels),
            "training_label_counts": {str(label): counts[label] for label in data.labels},
        },
    )


def _training_started(model: nn.Module, built: Built) -> Event:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return Event(
        "message",
        f"training started: {built.applied.summary}, {trainable:,} of {total:,} parameters trainable",
        {
            **built.applied.details,
            "head_modules": list(built.task_model.head_modules),
            "trainable_parameters": trainable,
            "total_parameters": total,
        },
    )


def _final_metrics(result: TrainResult) -> dict[str, float]:
    """Training loss and time, and each validation metric before the first step and at the end."""
    metrics = {"train_loss": result.train_loss, "train_seconds": result.seconds}
    if result.initial_eval is not None and result.final_eval is not None:
        metrics |= {f"initial_val_{name}": value for name, value in result.initial_eval.metrics.items()}
        metrics |= {f"val_{name}": value for name, value in result.final_eval.metrics.items()}
    if result.best_step is not None:
        metrics["best_step"] = result.best_step
    return metrics
