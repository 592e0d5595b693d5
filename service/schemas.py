"""The API's response bodies, as they appear in the OpenAPI document.

Request bodies are `tuning.spec.JobSpec` (jobs) and multipart form fields (files); everything a
client reads back is declared here. Timestamps are unix seconds, as in OpenAI's API.
"""

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.models import JobStatus
from tuning.spec import JobSpec, Method
from tuning.spec.catalogue import CatalogueItem

FileStatus = Literal["processed", "error"]


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, naming the field or line at fault.")
    type: str = Field(description="Error family, e.g. invalid_request_error, not_found_error.")
    param: str | None = Field(description="The request field at fault (dotted path), if any.")
    code: str | None = Field(description="Machine-readable reason, e.g. invalid_file, model_not_found.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    filename: str
    purpose: str
    bytes: int
    created_at: int
    status: FileStatus
    status_details: str | None = Field(description="Why the file was refused: the first bad line and reason.")
    sha256: str | None
    examples: int | None = Field(description="Number of examples (lines) in a processed file.")
    format: str | None = Field(
        None,
        description="A processed file's data format: classification, multi_label, regression, text, "
        "prompt_completion or chat.",
    )


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class JobError(BaseModel):
    code: str
    message: str
    param: str | None


class ArtifactObject(BaseModel):
    object: Literal["fine_tuning.job.artifact"] = "fine_tuning.job.artifact"
    name: str
    bytes: int
    sha256: str
    created_at: int
    url: str = Field(description="Where to download this file, relative to the server root.")


class ArtifactList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ArtifactObject]
    archive_url: str = Field(description="The whole artifact as one .tar.gz, relative to the server root.")


class JobObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    status: JobStatus
    base_model: str
    method: Method
    training_file: str
    validation_file: str | None
    spec: JobSpec = Field(description="The job spec exactly as accepted.")
    metadata: dict[str, str]
    created_at: int
    started_at: int | None
    finished_at: int | None
    examples_seen: int
    trained_tokens: int
    progress: float = Field(ge=0.0, le=1.0)
    metrics: dict[str, Any] = Field(description="The latest training and evaluation metrics.")
    validation: dict[str, Any] | None = Field(
        None, description="The validating_files report: per file, examples, token counts and what was found."
    )
    error: JobError | None
    cancel_requested: bool
    artifacts: list[ArtifactObject] = Field(description="The published files, once the job succeeded.")


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobObject]
    has_more: bool


class JobEventObject(BaseModel):
    id: int
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    type: str = Field(description="message | metrics | eval | status")
    message: str
    data: dict[str, Any]


class JobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEventObject]
    has_more: bool


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    source: str = Field(description="bundled | directory | hf_cache | job (one of your succeeded jobs)")
    architecture: str | None
    parameters: int | None = Field(description="Parameter count; null when the weights are not safetensors.")
    tasks: list[str] = Field(description="The job tasks this model can be fine-tuned for.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class MethodList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CatalogueItem] = Field(
        description="Every method, then every part that composes with any method."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]


ERROR_DESCRIPTIONS = {
    400: "Bad request: the message names the field at fault.",
    401: "Missing, invalid or revoked API key.",
    404: "Unknown id (another owner's ids answer the same).",
    409: "The resource's state does not allow this now.",
    413: "The request body is over the size limit.",
    415: "The body is not of the expected media type.",
    422: "A field or a line of the uploaded file is invalid.",
    500: "Unexpected server error; details are in the server log, never in the response.",
    503: "A dependency (database, broker) is unreachable.",
}


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries declaring the error shape for each status code."""
    return {code: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[code]} for code in status_codes}


def unix_seconds(moment: datetime) -> int:
    # SQLite hands back naive datetimes; every timestamp deltatune stores is UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def optional_unix_seconds(moment: datetime | None) -> int | None:
    return None if moment is None else unix_seconds(moment)
