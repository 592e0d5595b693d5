"""Response bodies of /v1/files."""

from typing import Literal

from pydantic import BaseModel, Field

FileStatus = Literal["processed", "error"]


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
