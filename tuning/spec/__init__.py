"""The job spec: the single source of truth for a fine-tuning job.

The same pydantic models are the API's request body and OpenAPI schema, the JSON stored in the
jobs table, the worker's input and the spec written into every artifact's manifest. A combination
of parts that cannot work is refused here, with the reason, so the API answers 422 before queueing.
"""

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from tuning.methods import (
    ADDITIVE_METHODS,
    LORA_COMPRESSIBLE_METHODS,
    MERGEABLE_METHODS,
    METHOD_MODELS,
    PEFT_METHODS,
    Method,
    method_entry,
)
from tuning.methods.lora import LoraMethod
from tuning.spec.parts import ExportOptions, GradualUnfreeze, HeadSpec, LayerLrDecay, Regularizers
from tuning.spec.resources import Resources
from tuning.spec.training import (
    FORMAT_OF_PROBLEM,
    FORMATS_BY_TASK,
    LOWER_IS_BETTER,
    METRICS,
    CheckpointOptions,
    DataFormat,
    DataOptions,
    EarlyStopping,
    ProblemType,
    Task,
)
from tuning.spec_base import CatalogueEntry, MethodOptions, SpecModel

__all__ = [
    "ADDITIVE_METHODS",
    "FORMAT_OF_PROBLEM",
    "FORMATS_BY_TASK",
    "LORA_COMPRESSIBLE_METHODS",
    "LOWER_IS_BETTER",
    "MERGEABLE_METHODS",
    "METHOD_MODELS",
    "METRICS",
    "PEFT_METHODS",
    "CatalogueEntry",
    "CheckpointOptions",
    "CompositionError",
    "DataFormat",
    "DataOptions",
    "EarlyStopping",
    "JobRequest",
    "ProblemType",
    "ExportOptions",
    "GradualUnfreeze",
    "HeadSpec",
    "Hyperparameters",
    "JobSpec",
    "LayerLrDecay",
    "LoraMethod",
    "Method",
    "MethodOptions",
    "Regularizers",
    "ResolvedHyperparameters",
    "Resources",
    "SpecModel",
    "Task",
]


class CompositionError(ValueError):
    """Parts of a spec that cannot work together; `param` is the dotted path the API error names."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


Epochs = Annotated[int, Field(ge=1, le=1000)]
LearningRate = Annotated[float, Field(gt=0, le=1.0)]


class Hyperparameters(SpecModel):
    epochs: Epochs | Literal["auto"] = Field(
        "auto",
        description="Passes over the training file. auto: enough passes for about 150 optimizer steps, "
        "between 1 and 10 (tuning.auto); the job's events say how many it chose.",
    )
    batch_size: int = Field(16, ge=1, le=4096)
    learning_rate: LearningRate | Literal["auto"] = Field(
        "auto",
        description="Peak learning rate. auto: the AdamW rate the method's paper fine-tunes with, × "
        "√(batch_size/16), and a new task head at that or 1e-3, whichever is higher (tuning.auto); "
        "a number applies to every trained parameter.",
    )
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="sgd is plain SGD, no momentum.")
    warmup_ratio: float = Field(0.06, ge=0.0, le=1.0, description="Fraction of steps with linear warmup.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping norm; null disables it.")
    max_seq_length: int = Field(128, ge=8, le=8192, description="Longer examples are truncated.")
    seed: int = Field(42, ge=0, le=2**32 - 1)
    logging_steps: int = Field(10, ge=1, description="Emit a training event every N optimizer steps.")
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate every N steps; null evaluates at the end of each epoch."
    )
    group_by_length: bool | None = Field(
        None,
        description="Batch examples of similar length together (a seeded shuffle, sorted by length in "
        "windows of 4 batches, the batches shuffled), so each batch pads to a length near its own "
        "examples'; false takes batches straight from a shuffled order; null: true for "
        "sequence_classification, false for causal_lm (where data.packing removes padding instead).",
    )
    mixed_precision: Literal["auto", "bf16", "no"] = Field(
        "auto",
        description="Training's forward under bf16 autocast. auto: on a CUDA GPU and on CPUs with native "
        "bf16 matmuls (AMX or AVX512-BF16), float32 elsewhere; bf16: always; no: float32 everywhere. "
        "Weights, the saved delta and every evaluation stay float32.",
    )
    frozen_layers: Literal["auto", "reuse", "recompute", "dropout"] = Field(
        "auto",
        description="How the layers below the lowest trainable one run (a linear probe, partial's last N "
        "layers, LoRA on the top layers, gradual unfreezing's early stages). reuse: without dropout, so "
        "their outputs are a function of the tokens, computed once per example and reused every epoch and "
        "evaluation (sequence_classification on BERT-style encoders; recomputes above "
        "frozen_outputs_max_mb); recompute: without dropout, computed again each step (the same training, "
        "slower); dropout: as in training, dropout on, every step; auto: reuse when at least one layer is "
        "frozen for 2 epochs or more and there is no kl regularizer, else dropout. The job's events say "
        "which ran.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Keep only each transformer layer's input for backward and recompute the rest during "
        "it (transformers' gradient_checkpointing_enable): activation memory falls to about one layer's, "
        "a step costs about one more forward. Refused for a model that does not support it.",
    )
    frozen_outputs_max_mb: int = Field(
        2048,
        ge=0,
        le=1_048_576,
        description="The most memory (MiB, on the training device) reuse may keep the frozen layers' "
        "outputs in, float32 tokens × hidden size over the training and validation sets; above it they "
        "are recomputed each step instead, with an event saying so.",
    )


class ResolvedHyperparameters(Hyperparameters):
    """Hyperparameters with every "auto" resolved to a number (tuning.auto): what training reads and
    the artifact's manifest records."""

    epochs: Epochs
    learning_rate: LearningRate


class JobSpec(SpecModel):
    """What a client POSTs to /v1/jobs."""

    base_model: str = Field(min_length=1, max_length=512, examples=["sentence-transformers/all-MiniLM-L6-v2"])
    task: Task = "sequence_classification"
    problem_type: ProblemType | None = Field(
        None,
        description="sequence_classification: single_label, multi_label or regression; "
        "null takes it from the training file's format.",
    )
    training_file: str = Field(min_length=1, max_length=64, description="Id of an uploaded JSONL file.")
    validation_file: str | None = Field(None, min_length=1, max_length=64)
    method: Method = Field(default_factory=LoraMethod)
    head: HeadSpec = Field(default_factory=HeadSpec)
    layer_lr_decay: LayerLrDecay | None = None
    gradual_unfreeze: GradualUnfreeze | None = None
    regularizers: Regularizers = Field(default_factory=Regularizers)
    export: ExportOptions = Field(default_factory=ExportOptions)
    hyperparameters: Hyperparameters = Field(default_factory=lambda: Hyperparameters())
    data: DataOptions = Field(default_factory=DataOptions)
    early_stopping: EarlyStopping | None = None
    checkpoints: CheckpointOptions | None = Field(None, description="Keep checkpoints while training.")
    from_checkpoint: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Id of another job's checkpoint to start from (same base model and method).",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, max_length=16, description="Up to 16 string pairs kept with the job."
    )
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _parts_fit_the_task(self) -> Self:
        if self.task == "causal_lm":
            if self.problem_type is not None:
                raise CompositionError(
                    "problem_type applies to sequence_classification only", param="problem_type"
                )
            if self.head != HeadSpec():
                raise CompositionError(
                    "causal_lm predicts tokens with the model's own language-model head: no head to set",
                    param="head",
                )
            if self.regularizers.ewc is not None:
                raise CompositionError(
                    "regularizers.ewc estimates a classifier's Fisher information; "
                    "it is not available for causal_lm",
                    param="regularizers.ewc",
                )
            if self.regularizers.kl is not None:
                raise CompositionError(
                    "regularizers.kl compares class distributions; it is not available for causal_lm",
                    param="regularizers.kl",
                )
            if self.hyperparameters.frozen_layers in ("reuse", "recompute"):
                raise CompositionError(
                    "hyperparameters.frozen_layers reuse and recompute apply to sequence_classification",
                    param="hyperparameters.frozen_layers",
                )
        else:
            cached = self.hyperparameters.frozen_layers in ("reuse", "recompute")
            if cached and self.regularizers.kl is not None:
                raise CompositionError(
                    "hyperparameters.frozen_layers reuse and recompute change the forward that "
                    "regularizers.kl compares with its reference model on the same tokens; "
                    "use dropout or auto",
                    param="hyperparameters.frozen_layers",
                )
            if self.problem_type == "regression":
                for name in ("kl", "ewc"):
                    if getattr(self.regularizers, name) is not None:
                        raise CompositionError(
                            f"regularizers.{name} works on the distribution over classes; a regression "
                            "head has one output, so it would constrain nothing",
                            param=f"regularizers.{name}",
                        )
            for name, value in (
                ("data.packing", self.data.packing),
                ("data.chat_template", self.data.chat_template),
            ):
                if value:
                    raise CompositionError(f"{name} applies to causal_lm only", param=name)
        if self.hyperparameters.optimizer == "sgd" and self.hyperparameters.learning_rate == "auto":
            raise CompositionError(
                "hyperparameters.learning_rate auto picks the AdamW rates of the methods' papers; "
                "give sgd a number",
                param="hyperparameters.learning_rate",
            )
        if self.early_stopping is not None:
            if self.validation_file is None:
                raise CompositionError(
                    "early_stopping watches a validation metric: give a validation_file",
                    param="early_stopping",
                )
            kinds = (
                ["causal_lm"]
                if self.task == "causal_lm"
                else [self.problem_type]
                if self.problem_type
                else ["single_label", "multi_label", "regression"]
            )
            if not any(self.early_stopping.metric in METRICS[kind] for kind in kinds):
                known = sorted({m for kind in kinds for m in METRICS[kind]})
                raise CompositionError(
                    f"early_stopping.metric {self.early_stopping.metric!r} is not reported for this task; "
                    f"choose one of {known}",
                    param="early_stopping.metric",
                )
        return self

    def _fits_split_batches(self) -> None:
        # DDP fixes the trainable set when it wraps the model, and each batch is split among processes
        # and passes: a growing set, or a penalty computed on each batch whole, would not give the
        # result of one process and one pass.
        split_by = (
            "resources.processes" if self.resources.processes > 1 else "resources.max_examples_per_device"
        )
        if self.gradual_unfreeze is not None and self.resources.processes > 1:
            raise CompositionError(
                "gradual_unfreeze grows the trainable set while training; it runs in one process",
                param=split_by,
            )
        if self.regularizers.kl is not None:
            raise CompositionError(
                "regularizers.kl is computed on each batch whole; it runs in one process and one pass",
                param=split_by,
            )

    def _fits_shards(self) -> None:
        # `full` on several processes trains sharded: each holds a part of every weight, so what reads
        # θ−θ₀ whole beside each step is not built for it yet.
        alone = {
            "regularizers.l2sp": self.regularizers.l2sp,
            "regularizers.ewc": self.regularizers.ewc,
        }
        for name, value in alone.items():
            if value is not None:
                raise CompositionError(
                    f"{name} is not available for method 'full' on several processes, which shards the "
                    "weights among them; use resources.processes 1",
                    param=name,
                )

    @model_validator(mode="after")
    def _parts_fit_the_method(self) -> Self:
        method, entry = self.method.type, method_entry(self.method.type)
        for name in self.regularizers.toward_pretrained_weights():
            if not entry.changes_pretrained(self.method):
                raise CompositionError(
                    f"regularizers.{name} pulls pretrained weights back toward their starting values, "
                    f"but method '{method}' changes no pretrained weight; "
                    "use kl, or a method that trains them",
                    param=f"regularizers.{name}",
                )
        if self.gradual_unfreeze is not None and (reason := entry.unfreeze_refusal(self.method)) is not None:
            raise CompositionError(reason, param="gradual_unfreeze")
        if self.resources.processes > 1 or self.resources.max_examples_per_device is not None:
            self._fits_split_batches()
        if method == "full" and self.resources.processes > 1:
            self._fits_shards()
        if self.export.merged:
            if not entry.mergeable:
                raise CompositionError(
                    f"export.merged: '{method}' adds modules or tokens that a plain model cannot hold; "
                    f"merging works for {', '.join(sorted(MERGEABLE_METHODS))}",
                    param="export.merged",
                )
            if self.head.type != "linear":
                raise CompositionError(
                    "export.merged needs a linear head, the one transformers' classes load",
                    param="export.merged",
                )
        if self.export.compress_to_lora and self.head.type != "linear":
            raise CompositionError(
                "export.lora_rank and export.lora_energy write a PEFT adapter, which needs a linear head",
                param="export",
            )
        if self.export.compress_to_lora and not entry.compresses_to_lora:
            compressible = " or ".join(f"'{name}'" for name in sorted(LORA_COMPRESSIBLE_METHODS))
            raise CompositionError(
                "export.lora_rank and export.lora_energy compress a delta job's Δw; "
                f"the method is not {compressible}",
                param="export",
            )
        return self

    @property
    def metrics_kind(self) -> str:
        """Which METRICS entry applies, once problem_type is known ("causal_lm" for language models)."""
        return "causal_lm" if self.task == "causal_lm" else self.problem_type or "single_label"

    @property
    def peft_layout(self) -> bool:
        """Whether the artifact is written in PEFT's layout (else deltatune's)."""
        return method_entry(self.method.type).layout == "peft" and self.head.type == "linear"


class JobRequest(JobSpec):
    """POST /v1/jobs: a job spec, whether to only validate it (`dry_run`, not stored), and where to
    POST its end (`webhook_url`, stored beside the spec, not in it: the spec says how to train and is
    copied into every artifact's manifest, which has no business knowing a notification address)."""

    dry_run: bool = Field(
        False,
        description="Validate the spec and files and return the report and estimates; queue nothing.",
    )
    webhook_url: str | None = Field(
        None,
        description="An http(s) URL that gets a signed POST when the job succeeds, fails or is cancelled, "
        "besides the endpoints of POST /v1/webhooks.",
    )

    def job_spec(self) -> JobSpec:
        return JobSpec.model_validate(self.model_dump(exclude={"dry_run", "webhook_url"}))
