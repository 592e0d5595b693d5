"""Bodies of the OpenAI-compatible /v1/fine_tuning/jobs: OpenAI's shapes, field for field, so that the
official `openai` SDK reads them unmodified, and the create request with deltatune's own parts beside
OpenAI's (what the SDK sends from `extra_body`).

A job is the same row as in /v1/jobs; service/openai_spec.py turns a create request into a JobSpec.
"""

from functools import reduce
from operator import or_
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from tuning.spec import (
    METHOD_MODELS,
    CheckpointOptions,
    DataOptions,
    EarlyStopping,
    ExportOptions,
    GradualUnfreeze,
    HeadSpec,
    LayerLrDecay,
    MethodOptions,
    ProblemType,
    Regularizers,
    Task,
)

# OpenAI's names for a status: deltatune's, one for one; `paused` is the one OpenAI's types leave out.
Status = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"]


def _auto_or_number(kind: type, low: float, high: float, *, above: bool = False) -> BeforeValidator:
    """`"auto"` or a number of `kind` in [low, high] (`above`: low itself excluded), said in one message."""
    bound = f"above {low:g}" if above else f"from {low:g}"
    expected = f'"auto" or {"an integer" if kind is int else "a number"} {bound} to {high:g}'

    def check(value: Any) -> Any:
        if value is None or value == "auto":
            return value
        number_ok = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is int and number_ok and float(value).is_integer():
            value = int(value)
        elif kind is int or not number_ok:
            raise ValueError(f"must be {expected}, not {value!r}")
        if not (low < value <= high if above else low <= value <= high):
            raise ValueError(f"must be {expected}, not {value!r}")
        return value

    return BeforeValidator(check)


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SupervisedHyperparameters(OpenAIModel):
    """OpenAI's three; `"auto"` (or leaving one out) takes deltatune's default."""

    batch_size: Annotated[Literal["auto"] | int | None, _auto_or_number(int, 1, 4096)] = None
    learning_rate_multiplier: Annotated[
        Literal["auto"] | float | None, _auto_or_number(float, 0, 100, above=True)
    ] = Field(None, description="Times deltatune's default learning rate.")
    n_epochs: Annotated[Literal["auto"] | int | None, _auto_or_number(int, 1, 1000)] = None


class Hyperparameters(SupervisedHyperparameters):
    """The top-level `hyperparameters` (OpenAI's older place for them): OpenAI's three, and any of
    deltatune's own (`max_seq_length`, `warmup_ratio`, ...) beside them."""

    model_config = ConfigDict(extra="allow")


class SupervisedOptions(OpenAIModel):
    hyperparameters: SupervisedHyperparameters | None = None


class SupervisedMethod(OpenAIModel):
    type: Literal["supervised"]
    supervised: SupervisedOptions | None = None


class UnsupportedMethod(OpenAIModel):
    """OpenAI's preference and reinforcement methods: named so the refusal can say why."""

    model_config = ConfigDict(extra="allow")
    type: Literal["dpo", "reinforcement"]


# OpenAI's method, or one of deltatune's (`lora`, `full`, `adapter`, ...) by its own `type`.
if TYPE_CHECKING:
    CreateMethod = SupervisedMethod | UnsupportedMethod | MethodOptions
else:
    CreateMethod = Annotated[
        reduce(or_, (SupervisedMethod, UnsupportedMethod, *METHOD_MODELS)), Field(discriminator="type")
    ]


class FineTuningJobCreate(OpenAIModel):
    """POST /v1/fine_tuning/jobs: OpenAI's fields, and deltatune's job spec parts by their own names."""

    model: str = Field(min_length=1, max_length=512, description="A base model, or a `fine_tuned_model`.")
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(None, min_length=1, max_length=64)
    hyperparameters: Hyperparameters | None = None
    method: CreateMethod | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    suffix: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Put in fine_tuned_model.",
    )
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    integrations: list[dict[str, Any]] | None = Field(None, description="None are available: empty or null.")
    # deltatune's own parts, as in POST /v1/jobs.
    task: Task | None = Field(
        None, description="Left out: causal_lm for chat, prompt/completion and text files."
    )
    problem_type: ProblemType | None = None
    head: HeadSpec | None = None
    layer_lr_decay: LayerLrDecay | None = None
    gradual_unfreeze: GradualUnfreeze | None = None
    regularizers: Regularizers | None = None
    export: ExportOptions | None = None
    data: DataOptions | None = None
    early_stopping: EarlyStopping | None = None
    checkpoints: CheckpointOptions | None = Field(
        None, description="Left out: one at each epoch's end, 3 kept."
    )
    from_checkpoint: str | None = Field(None, min_length=1, max_length=64)


class JobHyperparameters(BaseModel):
    """As the job's spec has them: "auto" until the job resolves it (its events say to what)."""

    batch_size: int
    learning_rate_multiplier: float | Literal["auto"]
    n_epochs: int | Literal["auto"]


class JobSupervised(BaseModel):
    hyperparameters: JobHyperparameters


class JobMethod(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: JobSupervised


class JobError(BaseModel):
    code: str
    message: str
    param: str | None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None = Field(description="Once succeeded: usable as a later job's `model`.")
    finished_at: int | None
    hyperparameters: JobHyperparameters
    model: str
    organization_id: str
    result_files: list[str] = Field(description="Once succeeded: the id of a CSV of step metrics.")
    seed: int
    status: Status
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] = Field(default_factory=list)
    metadata: dict[str, str] | None
    method: JobMethod
    spec: dict[str, Any] = Field(description="deltatune's job spec, as GET /v1/jobs/{id} shows it.")


class FineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any]
    type: Literal["message", "metrics"]


class FineTuningJobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool


class CheckpointMetrics(BaseModel):
    step: float
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class FineTuningJobCheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    has_more: bool
    first_id: str | None
    last_id: str | None
