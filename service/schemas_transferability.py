"""/v1/transferability's request and response bodies: score candidate base models before training."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TransferTask = Literal["sequence_classification", "causal_lm"]
RunStatus = Literal["queued", "running", "succeeded", "failed"]

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


class CandidateScore(BaseModel):
    model: str = Field(description="The candidate's base model id.")
    rank: int | None = Field(description="1 for the best; null when the candidate could not be scored.")
    score: Literal["logme", "perplexity"]
    value: float | None = Field(description="The score; null when the candidate could not be scored.")
    higher_is_better: bool
    seconds: float = Field(description="Time to load the candidate and score it.")
    examples: int = Field(description="Lines scored.")
    feature_dim: int | None = Field(None, description="LogME: the width of the frozen features.")
    cross_entropy: float | None = Field(None, description="causal_lm: mean token cross-entropy, nats.")
    tokens: int | None = Field(None, description="causal_lm: predicted tokens the cross-entropy averages.")
    error: str | None = Field(None, description="Why this candidate could not be scored.")


class TransferabilityError(BaseModel):
    code: str
    message: str


class TransferabilityObject(BaseModel):
    id: str
    object: Literal["transferability.run"] = "transferability.run"
    status: RunStatus
    training_file: str
    base_models: list[str]
    task: TransferTask
    max_examples: int
    created_at: int
    started_at: int | None
    finished_at: int | None
    seconds: float | None = Field(description="From the worker's start to the end, once finished.")
    results: list[CandidateScore] = Field(description="One score per candidate, best first, once succeeded.")
    error: TransferabilityError | None


class TransferabilityList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TransferabilityObject]
    has_more: bool
