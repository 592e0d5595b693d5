"""Response bodies of /v1/jobs/{id}/checkpoints."""

from typing import Literal

from pydantic import BaseModel, Field


class CheckpointFile(BaseModel):
    name: str
    bytes: int
    sha256: str
    url: str = Field(description="Where to download this file, relative to the server root.")


class CheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    job_id: str
    step: int
    epoch: float
    metrics: dict[str, float | None] = Field(
        description="The evaluation at this step, as val_<name>; empty when none ran at this step."
    )
    created_at: int
    bytes: int
    files: list[CheckpointFile]
    archive_url: str = Field(description="The whole checkpoint as one .tar.gz, relative to the server root.")


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointObject]
