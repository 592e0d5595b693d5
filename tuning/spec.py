"""The job spec: the single source of truth for a fine-tuning job.

The same pydantic models are the API's request body and OpenAPI schema, the JSON stored in the
jobs table, the worker's input and the spec written into every artifact's manifest.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Task = Literal["sequence_classification"]


class SpecModel(BaseModel):
    """Base for every spec model: unknown fields are refused, never ignored."""

    model_config = ConfigDict(extra="forbid")


class LoraMethod(SpecModel):
    """LoRA (Hu et al., 2021): W stays frozen, a low-rank update B·A scaled by alpha/r is trained."""

    type: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, le=1024, description="Rank of the update.")
    alpha: float = Field(16.0, gt=0, description="Scaling numerator: the update is multiplied by alpha/r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA path's input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "value"],
        min_length=1,
        description="nn.Linear modules to adapt: exact module names or name suffixes (e.g. 'query').",
    )

    @field_validator("target_modules")
    @classmethod
    def _names_are_not_blank(cls, names: list[str]) -> list[str]:
        if any(not name.strip() for name in names):
            raise ValueError("target_modules entries must be non-empty module names")
        return names


# A discriminated union keyed by `type`; the catalogue grows it one method at a time.
Method = Annotated[LoraMethod, Field(discriminator="type")]


class Hyperparameters(SpecModel):
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(16, ge=1, le=4096)
    learning_rate: float = Field(5e-4, gt=0, le=1.0)
    warmup_ratio: float = Field(0.06, ge=0.0, le=1.0, description="Fraction of steps with linear warmup.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping norm; null disables it.")
    max_seq_length: int = Field(128, ge=8, le=8192, description="Longer examples are truncated.")
    seed: int = Field(42, ge=0, le=2**32 - 1)
    logging_steps: int = Field(10, ge=1, description="Emit a training event every N optimizer steps.")
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate every N steps; null evaluates at the end of each epoch."
    )


class JobSpec(SpecModel):
    """What a client POSTs to /v1/jobs."""

    base_model: str = Field(min_length=1, max_length=512, examples=["sentence-transformers/all-MiniLM-L6-v2"])
    task: Task = "sequence_classification"
    training_file: str = Field(min_length=1, max_length=64, description="Id of an uploaded JSONL file.")
    validation_file: str | None = Field(None, min_length=1, max_length=64)
    method: Method = Field(default_factory=LoraMethod)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    metadata: dict[str, str] = Field(
        default_factory=dict, max_length=16, description="Up to 16 string pairs kept with the job."
    )
