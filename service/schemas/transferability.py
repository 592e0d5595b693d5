"""/v1/transferability's response bodies (the request is tuning.spec.transferability's)."""

from typing import Literal

from pydantic import BaseModel, Field

from tuning.spec.transferability import TransferTask

RunStatus = Literal["queued", "running", "succeeded", "failed"]


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
