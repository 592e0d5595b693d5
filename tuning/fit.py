"""`fit`: one fine-tuning job from its data files to the trained model in memory, in named phases.

    prepare  cheap checks first (base model known, spec fits its config, data valid, labels
             consistent, a resume point this job's), so a bad job fails in a second, not after the
             model has loaded; then the model (seed, load, what the regularizers compare against, the
             method, θ₀, a checkpoint to start from) and the encoded data
    train    tuning.train's loop (step, evaluate or stop, checkpoint, resume point) with the job's
             optimizer groups, regularizers and unfreezing schedule; from a resume point, the loop's
             state is put back and it goes on at the next step
    finish   the method's whole trainable set marked again, the model on the CPU in eval mode, metrics

`tuning.run` adds the last phase, export: the artifact written from what `fit` returns.
"""

import copy
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuning.artifacts import TrainedJob
from tuning.auto import AutoChoice, resolve, trained_with
from tuning.batching import Encoded, steps_per_epoch
from tuning.build import Built, apply_spec_method
from tuning.checkpoints import CheckpointSink, CheckpointWriter, load_checkpoint_weights
from tuning.compat import check_spec_for_model
from tuning.data import AnyExample, Label, read_data_file
from tuning.device import pick_device, use_attention, uses_bf16
from tuning.distribution import SINGLE, Ranks, is_sharded, reshard, whole
from tuning.errors import SpecError
from tuning.evaluate import Evaluation
from tuning.events import Event, EventSink, StopCheck, ignore_event, never_stop
from tuning.frozen_prefix import FrozenPrefix, frozen_prefix_for
from tuning.memory import (
    cast_frozen_to_bf16,
    enable_gradient_checkpointing,
    keeps_base_in_bf16,
    restore_float32,
)
from tuning.models import resolve_base_model
from tuning.optim import parameter_groups
from tuning.parts.head import logits_layer
from tuning.parts.head_start import starts_from_probe
from tuning.parts.layer_lr import layer_lr_scales
from tuning.parts.probe_head import fit_probe_head
from tuning.parts.unfreeze import UnfreezeSchedule
from tuning.pretrained import PretrainedSnapshot
from tuning.regularizers import Regularizer, RegularizerContext, make_regularizers
from tuning.regularizers.ewc import estimate_fisher
from tuning.resume import (
    JobIdentity,
    ResumeOptions,
    ResumePoint,
    ResumePointWriter,
    check_resume_point,
    fisher_matches,
    trained_precision,
)
from tuning.spec import JobSpec
from tuning.task_model import TaskModel
from tuning.tasks import Task, TaskData, resolved_spec, task_for
from tuning.tasks.classifier_task import ClassifierTask
from tuning.train import StepHook, TrainResult, seed_everything, train
from tuning.training_state import TrainingState, tensors_sha256

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fitted:
    job: TrainedJob  # the trained model, on the CPU in eval mode, and what its artifact needs
    result: TrainResult


@dataclass
class BeforeMethod:
    """What the regularizers compare against, taken before the method rewrote the model."""

    reference_model: nn.Module | None  # kl: a frozen copy
    fisher: dict[str, torch.Tensor] | None  # ewc: diagonal Fisher by pretrained parameter name


@dataclass
class Prepared:
    """A job ready to train: its resolved spec, data, task, and the model with its method applied."""

    spec: JobSpec  # problem_type and "auto" hyperparameters resolved, as the manifest records it
    base_path: Path
    task: Task
    data: TaskData
    device: torch.device
    task_model: TaskModel
    built: Built
    before_method: BeforeMethod
    snapshot: PretrainedSnapshot  # θ₀ of the pretrained tensors the method trains directly
    method_trainable: list[nn.Parameter]  # the method's whole trainable set, as it applied it
    train_set: Encoded
    validation_set: Encoded | None
    head_learning_rate: float | None = None  # "auto"'s rate for the new head; None: the spec's rate
    identity: JobIdentity | None = None  # what makes a resume point this job's, when it writes or reads one
    resume_point: ResumePoint | None = None  # the point it resumes from, checked to be this job's
    whole_model: "WholeModel | None" = None  # sharded (`full` on several processes): rank 0's plain copy

    @property
    def model(self) -> nn.Module:
        return self.task_model.model  # typed as a plain module: transformers' .to() stubs are odd

    def trained_job(self, metrics: dict[str, float]) -> TrainedJob:
        return TrainedJob(
            spec=self.spec,
            model=self.model,
            tokenizer=self.task_model.tokenizer,
            head_modules=self.task_model.head_modules,
            labels=self.data.labels,
            base_model_path=self.base_path,
            metrics=metrics,
            applied=self.built.applied,
            snapshot=self.snapshot,
            pretrained=self.task_model.pretrained,
            tokenizer_changed=self.built.tokenizer_changed,
        )


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
    resume: ResumeOptions | None = None,
    resume_dir: Path | None = None,
    resume_from: Path | None = None,
    on_event: EventSink = ignore_event,
    should_stop: StopCheck = never_stop,
    ranks: Ranks = SINGLE,
) -> Fitted:
    """Everything `tuning.run` does but writing the artifact: the trained model stays in memory.

    `fisher_path` is the source-task file of an `ewc` regularizer; `start_from` a checkpoint's
    artifact folder whose trained tensors the job starts from (`from_checkpoint`). With
    `spec.checkpoints` and a `checkpoints_dir`, each checkpoint is written there as an artifact and
    handed to `on_checkpoint`. With `resume` and a `resume_dir`, resume points are written there (see
    tuning.resume); `resume_from`, one of this job's points, continues the job where it was written.
    `ranks`: this process's place among those that train the job together (tuning.distribution); a
    sharded model (`full`) is gathered whole at the end, into a fresh copy of the model on rank 0.
    """
    job = prepare(
        spec,
        training_path=training_path,
        validation_path=validation_path,
        fisher_path=fisher_path,
        model_dirs=model_dirs,
        start_from=start_from,
        resumable=resume is not None or resume_from is not None,
        resume_from=resume_from,
        on_event=on_event,
        device=ranks.device,
    )
    writer = None
    if resume is not None and resume_dir is not None:
        assert job.identity is not None
        start = job.resume_point.step if job.resume_point is not None else 0
        trains_in = "bf16" if uses_bf16(job.device, job.spec.hyperparameters.mixed_precision) else "no"
        writer = ResumePointWriter(
            resume, resume_dir, job.identity, start_step=start, mixed_precision=trains_in
        )
    result = train_job(
        job,
        checkpoints_dir,
        on_checkpoint,
        resume_points=writer,
        on_event=on_event,
        should_stop=should_stop,
        ranks=ranks,
    )
    if is_sharded(job.model):
        return _gathered(job, result, ranks)
    return finish(job, result)


class WholeModel:
    """A sharded job's whole weights on rank 0: a plain copy of the model, on the CPU, that every process
    fills by gathering each tensor (a collective), for the writers of checkpoints and of the artifact."""

    def __init__(self, job: Prepared, ranks: Ranks) -> None:
        self.job, self.ranks = job, ranks
        self.task_model: TaskModel | None = None  # rank 0's, built when first asked for

    def gather(self) -> None:
        reshard(self.job.model)  # the shards, not the root's weights an evaluation left gathered
        plain = dict(self._plain().model.named_parameters()) if self.ranks.leads else {}
        with torch.no_grad():
            for name, parameter in self.job.model.named_parameters():
                tensor = whole(parameter.detach())  # every process, the same order
                if plain:
                    plain[name].copy_(tensor)

    def trained_job(self, metrics: dict[str, float]) -> TrainedJob:
        """Rank 0's: the job with its plain copy (as trained until the last gather)."""
        return replace(self.job.trained_job(metrics), model=self._plain().model)

    def _plain(self) -> TaskModel:
        if self.task_model is None:
            job = self.job
            self.task_model = job.task.load(job.spec, job.base_path, job.data.labels)
            apply_spec_method(job.spec, self.task_model)
        return self.task_model


class GatheredCheckpoints:
    """tuning.train's save_checkpoint for a sharded job, on every process: all gather the weights, then
    rank 0's writer (the others have none) writes the copy."""

    def __init__(self, whole_model: WholeModel, writer: CheckpointWriter | None) -> None:
        self.whole_model, self.writer = whole_model, writer
        self.kept: list[int] = []  # the writer's, as a resume point carries it

    def __call__(self, step: int, epoch: float, evaluation: Evaluation | None) -> None:
        self.whole_model.gather()
        if self.writer is not None:
            self.writer.kept = self.kept
            self.writer(step, epoch, evaluation)
            self.kept = self.writer.kept


def prepare(
    spec: JobSpec,
    *,
    training_path: Path,
    validation_path: Path | None,
    fisher_path: Path | None,
    model_dirs: Sequence[Path],
    start_from: Path | None,
    on_event: EventSink,
    resumable: bool = False,
    resume_from: Path | None = None,
    device: torch.device | None = None,
) -> Prepared:
    """The job's checks and data first, then its model and the encoded data.

    A `resumable` job (one that writes or reads resume points) records what makes a point its own;
    `resume_from` is refused here, before the model loads, unless it is this job's. `device`: where
    it trains, when the caller knows (one of several processes); else tuning.device picks it.
    """
    # Data: cheap checks first, so a bad job fails in a second, not after the model has loaded.
    given_spec = spec  # a resume point records the spec as the job gave it
    base_path = resolve_base_model(spec.base_model, model_dirs)
    check_spec_for_model(spec, base_path)
    training = read_data_file(training_path, param="training_file")
    task = task_for(spec, training.format)
    spec = resolved_spec(spec, task)
    validation = read_data_file(validation_path, param="validation_file") if validation_path else None
    data = task.check_data(training, validation)
    fisher_examples = _read_fisher_data(spec, fisher_path)
    on_event(_data_summary(data))
    identity, resume_point = None, None
    if resumable or resume_from is not None:
        files = {
            "training_file": training_path,
            "validation_file": validation_path,
            "fisher_file": fisher_path,
        }
        identity = JobIdentity.of(given_spec, base_model_path=base_path, data_files=files)
        resume_point = check_resume_point(resume_from, identity) if resume_from is not None else None

    # Model: seeded before it is built, since the new head's init is part of the run.
    seed_everything(spec.hyperparameters.seed)
    device = device or pick_device()
    if resume_point is not None:
        spec = _precision_of_point(spec, resume_point, device, on_event)
    precision = "bf16 autocast" if uses_bf16(device, spec.hyperparameters.mixed_precision) else "float32"
    on_event(
        Event(
            "message",
            f"loading {spec.base_model} on {device.type}, training and evaluating in {precision}",
            {"device": device.type, "training_precision": precision},
        )
    )
    task_model = task.load(spec, base_path, data.labels)
    model: nn.Module = task_model.model
    use_attention(model, device)
    model.to(device)
    # What the regularizers compare against is taken before the method rewrites the model.
    before_method = _before_method(spec, task_model, fisher_examples, device, on_event)
    built = apply_spec_method(spec, task_model)
    model.to(device)
    method_trainable = [p for p in model.parameters() if p.requires_grad]
    _save_memory(spec, model, device, on_event)
    snapshot = PretrainedSnapshot.take(model, task_model.pretrained)
    if start_from is not None:
        on_event(load_checkpoint_weights(model, start_from))

    # Encoded after the method: a method that adds tokens (input_adapter) adds them to the tokenizer.
    train_set = task.encode(task_model, spec, data.train, data.labels)
    validation_set = task.encode(task_model, spec, data.validation, data.labels) if data.validation else None
    auto = _resolve_auto(spec, len(data.train), len(train_set), base_path, on_event)
    if resume_point is None and start_from is None and starts_from_probe(auto.spec):
        on_event(_probe_head(auto.spec, task, task_model, train_set, device))
    on_event(_training_started(model, built))
    if identity is not None and before_method.fisher is not None:
        identity = replace(identity, fisher_sha256=tensors_sha256(before_method.fisher))
    return Prepared(
        auto.spec,
        base_path,
        task,
        data,
        device,
        task_model,
        built,
        before_method,
        snapshot,
        method_trainable,
        train_set,
        validation_set,
        auto.head_learning_rate,
        identity,
        resume_point,
    )


def _resolve_auto(
    spec: JobSpec, examples: int, sequences: int, base_path: Path, on_event: EventSink
) -> AutoChoice:
    """The "auto" hyperparameters as numbers, once the training set's size in batches is known (packing
    makes it the packed sequences'), announced with the reasons."""
    per_epoch = steps_per_epoch(sequences, spec.hyperparameters.batch_size)
    auto = resolve(spec, examples=examples, steps_per_epoch=per_epoch, base_path=base_path)
    if (event := auto.event()) is not None:
        on_event(event)
    return auto


def _probe_head(
    spec: JobSpec, task: Task, task_model: TaskModel, train_set: Encoded, device: torch.device
) -> Event:
    """The head's last linear layer fitted as a linear probe before training (tuning.parts.probe_head)."""
    assert isinstance(task, ClassifierTask)  # starts_from_probe: sequence classification only
    model = task_model.model
    layer = model.get_submodule(logits_layer(model, task_model.head_modules, model.config.num_labels or 1))
    assert isinstance(layer, nn.Linear)  # logits_layer only returns Linear layers
    started = time.perf_counter()
    fitted = fit_probe_head(
        model,
        layer,
        train_set,
        loss=task.mean_loss,
        device=device,
        mixed_precision=uses_bf16(device, spec.hyperparameters.mixed_precision),
    )
    seconds = time.perf_counter() - started
    return Event(
        "message",
        f"head fitted first as a linear probe on the training set's features (LP-FT): training loss "
        f"{fitted.loss_before:.4g} → {fitted.loss_after:.4g} over {fitted.examples} examples, "
        f"{fitted.features} features, in {seconds:.1f} s",
        {
            "head_initialization": "probe",
            "probe_loss_before": fitted.loss_before,
            "probe_loss_after": fitted.loss_after,
            "probe_seconds": seconds,
        },
    )


def _precision_of_point(
    spec: JobSpec, point: ResumePoint, device: torch.device, on_event: EventSink
) -> JobSpec:
    """`spec` training in what the point's run trained in, when "auto" would pick otherwise here (a CPU
    with other bf16 instructions than the one that wrote it): a resumed job ends as if never stopped."""
    recorded = trained_precision(point)
    hp = spec.hyperparameters
    here = "bf16" if uses_bf16(device, hp.mixed_precision) else "no"
    if hp.mixed_precision != "auto" or recorded is None or recorded == here:
        return spec
    words = {"bf16": "bf16 autocast", "no": "float32"}
    on_event(
        Event(
            "message",
            f"resuming in {words[recorded]}, as the job trained before its resume point "
            f"(mixed_precision auto would pick {words[here]} on this {device.type})",
            {"mixed_precision": recorded, "auto_here": here},
        )
    )
    return spec.model_copy(update={"hyperparameters": hp.model_copy(update={"mixed_precision": recorded})})


def _save_memory(spec: JobSpec, model: nn.Module, device: torch.device, on_event: EventSink) -> None:
    """Gradient checkpointing when the spec asks; the frozen base in bf16 on CUDA (tuning.memory)."""
    if spec.hyperparameters.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if keeps_base_in_bf16(spec, device):
        cast = cast_frozen_to_bf16(model)
        on_event(
            Event(
                "message", f"frozen base held in bf16 ({cast:,} parameters)", {"bf16_base_parameters": cast}
            )
        )


def train_job(
    job: Prepared,
    checkpoints_dir: Path | None,
    on_checkpoint: CheckpointSink | None,
    *,
    resume_points: ResumePointWriter | None = None,
    on_event: EventSink,
    should_stop: StopCheck,
    ranks: Ranks = SINGLE,
) -> TrainResult:
    """tuning.train's loop with the parts the spec composes: optimizer groups, regularizers, schedule;
    from `job.resume_point`'s state when it has one."""
    spec = job.spec
    resumed = _resumed_state(job, on_event) if job.resume_point is not None else None
    sharded = spec.method.type == "full" and ranks.world_size > 1
    checkpoints: CheckpointWriter | GatheredCheckpoints | None = None
    if sharded:
        _shard(job, ranks)
        job.whole_model = WholeModel(job, ranks)
        if spec.checkpoints is not None:  # on every process: each takes part in the gather
            checkpoints = GatheredCheckpoints(job.whole_model, _writer(job, checkpoints_dir, on_checkpoint))
    else:
        checkpoints = _writer(job, checkpoints_dir, on_checkpoint)
    return train(
        job.model,
        job.train_set,
        job.validation_set,
        trained_with(spec),
        task=job.task,
        device=job.device,
        optimizer_groups=_optimizer_groups(job),
        regularizers=_regularizers(job),
        before_step=_unfreeze_schedule(job),
        early_stopping=spec.early_stopping,
        checkpoints=spec.checkpoints if checkpoints is not None else None,
        save_checkpoint=checkpoints,
        resume_points=resume_points,
        resume_from=resumed,
        # Nothing of `full` is frozen (gradual_unfreeze runs in one process): no view of a frozen part
        # may come between the loop and the sharded model.
        frozen_prefix=None if sharded else _frozen_prefix(job, on_event),
        on_event=on_event,
        should_stop=should_stop,
        ranks=ranks,
        rows_per_pass=spec.resources.max_examples_per_device,
    )


def _writer(
    job: Prepared, checkpoints_dir: Path | None, on_checkpoint: CheckpointSink | None
) -> CheckpointWriter | None:
    spec = job.spec
    if spec.checkpoints is None or checkpoints_dir is None:
        return None
    trained_job = job.whole_model.trained_job if job.whole_model is not None else job.trained_job
    return CheckpointWriter(spec.checkpoints, checkpoints_dir, trained_job, on_checkpoint)


def _shard(job: Prepared, ranks: Ranks) -> None:
    """`full` on several processes: each holds a shard of the model (tuning.distribution), and nothing
    else keeps its whole weights on the device. θ₀, read again only by the artifact's writer (the
    regularizers that read it each step are refused with sharding), waits on the CPU."""
    ranks.shard(job.model, job.model.get_submodule(job.built.layers.stack))
    job.method_trainable = [parameter for parameter in job.model.parameters() if parameter.requires_grad]
    job.snapshot = job.snapshot.to("cpu")


def _frozen_prefix(job: Prepared, on_event: EventSink) -> FrozenPrefix | None:
    return frozen_prefix_for(
        job.spec,
        model=job.model,
        layers=job.built.layers,
        task_kind=job.task.kind,
        train_set=job.train_set,
        validation_set=job.validation_set,
        device=job.device,
        bf16=uses_bf16(job.device, job.spec.hyperparameters.mixed_precision),
        on_event=on_event,
    )


def _resumed_state(job: Prepared, on_event: EventSink) -> TrainingState:
    """The resume point's training state, announced: the job's events go on from the step after it."""
    point, identity = job.resume_point, job.identity
    assert point is not None and identity is not None
    state = TrainingState.load(point.folder)
    details: dict[str, Any] = {
        "resumed_from_step": point.step,
        "epoch": round(state.epochs_done, 4),
        "resume_point": point.folder.name,
        "examples_seen": state.loop["progress"]["examples_seen"],
    }
    if identity.fisher_sha256 is not None:
        # EWC's Fisher is estimated again, not stored: it is model-sized (a LoRA point would grow to the
        # base's size) and deterministic (a private generator); on other hardware it may round apart.
        details["fisher_identical"] = fisher_matches(point, identity)
        if not details["fisher_identical"]:
            logger.warning(
                "resumed from %s: the Fisher estimate differs from the interrupted attempt's", point
            )
    on_event(Event("message", f"resumed from step {point.step}", details))
    return state


def finish(job: Prepared, result: TrainResult) -> Fitted:
    """The trained model as the writers expect it: the method's whole set trainable, on the CPU, eval."""
    for parameter in job.method_trainable:  # a schedule may have stopped short of unfreezing them all
        parameter.requires_grad_(True)
    metrics = _final_metrics(result)
    logger.info(
        "%s: %d steps in %.1f s, metrics %s", job.spec.base_model, result.steps, result.seconds, metrics
    )
    restore_float32(job.model)
    job.model.to("cpu").eval()
    job.snapshot = job.snapshot.to("cpu")
    return Fitted(job.trained_job(metrics), result)


def _gathered(job: Prepared, result: TrainResult, ranks: Ranks) -> Fitted:
    """A sharded job's trained weights, whole, in rank 0's plain copy of the model (which the artifact is
    written from); every process takes part in gathering them. The other processes keep their shards."""
    assert job.whole_model is not None
    job.whole_model.gather()
    plain = job.whole_model.task_model
    if plain is None:
        return Fitted(job.trained_job(_final_metrics(result)), result)
    job.task_model = plain
    job.method_trainable = [parameter for parameter in plain.model.parameters() if parameter.requires_grad]
    return finish(job, result)


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


def _before_method(
    spec: JobSpec,
    task_model: TaskModel,
    fisher_examples: Sequence[AnyExample],
    device: torch.device,
    on_event: EventSink,
) -> BeforeMethod:
    reference = None
    if spec.regularizers.kl is not None:
        reference = copy.deepcopy(task_model.model).eval().requires_grad_(False)
    fisher = None
    if spec.regularizers.ewc is not None:
        texts = [example.text for example in fisher_examples if hasattr(example, "text")]
        fisher, event = estimate_fisher(task_model, texts, device=device)
        on_event(event)
    return BeforeMethod(reference, fisher)


def _optimizer_groups(job: Prepared) -> list[dict[str, Any]]:
    spec, model, built = job.spec, job.model, job.built
    scales = dict(built.applied.lr_scales)
    if spec.layer_lr_decay is not None:
        for name, scale in layer_lr_scales(model, built.layers, spec.layer_lr_decay.decay).items():
            scales[name] = scales.get(name, 1.0) * scale
    if job.head_learning_rate is not None:
        head = job.head_learning_rate / trained_with(spec).learning_rate
        for name, _ in model.named_parameters():
            if any(name.startswith(module + ".") for module in built.task_model.head_modules):
                scales[name] = scales.get(name, 1.0) * head
    return parameter_groups(model, spec.hyperparameters.weight_decay, scales)


def _regularizers(job: Prepared) -> list[Regularizer]:
    model, built, snapshot, before = job.model, job.built, job.snapshot, job.before_method
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
    return make_regularizers(job.spec.regularizers, context)


def _unfreeze_schedule(job: Prepared) -> StepHook | None:
    spec = job.spec
    if spec.gradual_unfreeze is None:
        return None
    per_epoch = steps_per_epoch(len(job.train_set), spec.hyperparameters.batch_size)
    return UnfreezeSchedule(job.model, job.built.layers, spec.gradual_unfreeze, steps_per_epoch=per_epoch)


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
    """Training loss and time (the evaluations' share apart too), and each validation metric before the
    first step and at the end."""
    metrics = {"train_loss": result.train_loss, "train_seconds": result.seconds}
    if result.initial_eval is not None and result.final_eval is not None:
        metrics["eval_seconds"] = result.eval_seconds
        metrics |= {f"initial_val_{name}": value for name, value in result.initial_eval.metrics.items()}
        metrics |= {f"val_{name}": value for name, value in result.final_eval.metrics.items()}
    if result.best_step is not None:
        metrics["best_step"] = result.best_step
    return metrics
