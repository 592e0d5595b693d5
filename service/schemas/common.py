"""What every response body shares: the error shape, OpenAPI's error entries, unix-second times."""

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, naming the field or line at fault.")
    type: str = Field(description="Error family, e.g. invalid_request_error, not_found_error.")
    param: str | None = Field(description="The request field at fault (dotted path), if any.")
    code: str | None = Field(description="Machine-readable reason, e.g. invalid_file, model_not_found.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERROR_DESCRIPTIONS = {
    400: "Bad request: the message names the field at fault.",
    401: "Missing, invalid or revoked API key.",
    404: "Unknown id (another owner's ids answer the same).",
    409: "The resource's state does not allow this now, or a request with its Idempotency-Key still runs.",
    413: "The request body is over the size limit.",
    415: "The body is not of the expected media type.",
    422: "A field or a line of the uploaded file is invalid.",
    429: "Too many at once (e.g. open event streams of one owner); retry after `Retry-After` seconds.",
    500: "Unexpected server error; details are in the server log, never in the response.",
    503: "The database (for /readyz also the broker, or a data folder that cannot be written) is "
    "unavailable; retry after `Retry-After` seconds.",
    507: "The server's disk is full: nothing was stored.",
}
# 503 says when to come back; clients and proxies read it from this header.
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
}


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries declaring the error shape for each status code."""
    return {
        code: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[code]}
        | ({"headers": RETRY_AFTER} if code in (429, 503) else {})
        for code in status_codes
    }


def unix_seconds(moment: datetime) -> int:
    # SQLite hands back naive datetimes; every timestamp deltatune stores is UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def optional_unix_seconds(moment: datetime | None) -> int | None:
    return None if moment is None else unix_seconds(moment)
