"""The transferability request: which candidate base models to score on a training file, before any
fine-tuning. Like JobSpec, one model is the request body, the stored JSON and the worker's input.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TransferTask = Literal["sequence_classification", "causal_lm"]

MAX_CANDIDATES = 8


class TransferabilityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    training_file: str = Field(
        description="A processed file of yours, the data the candidates are scored on."
    )
    base_models: list[str] = Field(
        min_length=1,
        max_length=MAX_CANDIDATES,
        description="Candidate base model ids, as `GET /v1/models` lists them.",
    )
    task: TransferTask = Field(
        "sequence_classification",
        description="sequence_classification: LogME on frozen mean-pooled features (higher is better); "
        "causal_lm: zero-shot perplexity of the model's own LM head (lower is better).",
    )
    max_examples: int = Field(
        1000, ge=2, le=100_000, description="At most this many lines are scored: a seeded sample of the file."
    )

    @field_validator("base_models")
    @classmethod
    def _distinct(cls, base_models: list[str]) -> list[str]:
        repeated = sorted({name for name in base_models if base_models.count(name) > 1})
        if repeated:
            raise ValueError(f"each candidate may appear once; repeated: {', '.join(repeated)}")
        return base_models
