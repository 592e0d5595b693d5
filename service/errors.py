"""One error body for every failure: `{"error": {"message", "type", "param", "code"}}`.

Routes raise `ApiError` (or a subclass); `install_error_handlers` turns it, FastAPI's request
validation errors, Starlette's HTTP exceptions (404 route, 405, 413) and any unexpected exception
into that shape, so a client parses one format whatever went wrong.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from core.db import database_unavailable
from core.storage import StoreUnavailable
from tuning.spec import CompositionError

logger = logging.getLogger(__name__)

# The OpenAI-compatible routes (service/routes/fine_tuning.py): their invalid requests answer 400.
OPENAI_PREFIX = "/v1/fine_tuning/"

# `type` groups errors the way OpenAI's API does; `code` says precisely what happened.
TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    507: "insufficient_storage",
}
CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "not_ready",
    507: "insufficient_storage",
}


class ApiError(Exception):
    """An error a client caused or should know about, answered in the one error shape."""

    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if status_code is not None:
            self.status_code = status_code
        self.code = code or CODE_BY_STATUS.get(self.status_code, "error")
        self.headers = headers


class NotFound(ApiError):
    """Unknown id, or an id that belongs to another owner: both answer exactly the same."""

    status_code = 404


class Conflict(ApiError):
    status_code = 409


class Unauthorized(ApiError):
    status_code = 401

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class TooLarge(ApiError):
    status_code = 413


class InsufficientStorage(ApiError):
    """The server's disk is full: not the client's fault, and nothing was stored."""

    status_code = 507


def error_body(
    message: str, *, status_code: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": TYPE_BY_STATUS.get(
                status_code, "server_error" if status_code >= 500 else "invalid_request_error"
            ),
            "param": param,
            "code": code or CODE_BY_STATUS.get(status_code, "error"),
        }
    }


def error_response(
    message: str,
    *,
    status_code: int,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_body(message, status_code=status_code, param=param, code=code)
    return JSONResponse(body, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    # DBAPIError covers OperationalError and InterfaceError; TimeoutError is the pool's.
    app.add_exception_handler(sa_exc.DBAPIError, _database_error)
    app.add_exception_handler(sa_exc.TimeoutError, _database_error)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unexpected_error)


async def _client_disconnected(request: Request, exc: Exception) -> JSONResponse:
    # Nobody is left to read an answer; a client leaving is routine, not an error with a traceback.
    logger.info("client disconnected during %s %s", request.method, request.url.path)
    return error_response("the client disconnected", status_code=400, code="client_disconnected")


def database_unavailable_response(retry_after: int) -> JSONResponse:
    """503 with Retry-After: the request may well succeed once the database is back."""
    return error_response(
        f"the database is unreachable right now; retry in {retry_after} seconds",
        status_code=503,
        code="database_unavailable",
        headers={"Retry-After": str(retry_after)},
    )


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Like a database outage: the request may well succeed once the object store answers again.
    logger.warning("object store unavailable on %s %s: %s", request.method, request.url.path, exc)
    retry_after = request.app.state.settings.retry_after_seconds
    return error_response(
        f"the object store is unreachable right now; retry in {retry_after} seconds",
        status_code=503,
        code="storage_unavailable",
        headers={"Retry-After": str(retry_after)},
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not database_unavailable(exc):
        return await _unexpected_error(request, exc)
    # A known outage, not a bug: one line in the log, no traceback, and never the URL to the client.
    logger.warning(
        "database unavailable on %s %s: %s",
        request.method,
        request.url.path,
        type(exc.__cause__ or exc).__name__,
    )
    return database_unavailable_response(request.app.state.settings.retry_after_seconds)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.message, status_code=exc.status_code, param=exc.param, code=exc.code, headers=exc.headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        # Malformed JSON is a 400: there is no field to blame, only a position in the text.
        position = first["loc"][-1]
        reason = (first.get("ctx") or {}).get("error", "decode error")
        return error_response(
            f"request body is not valid JSON: {reason} at position {position}",
            status_code=400,
            code="invalid_json",
        )
    if tuple(first["loc"]) == ("body",) and isinstance(exc.body, bytes):
        # FastAPI hands a body that was not sent as JSON through as raw bytes (a JSON string is a str).
        return error_response(
            "request body must be JSON sent with 'Content-Type: application/json'",
            status_code=415,
            code="unsupported_media_type",
        )
    # OpenAI's API answers every invalid request 400; the surface that copies it does the same.
    status = 400 if request.url.path.startswith(OPENAI_PREFIX) else 422
    param = field_path(first["loc"], exc.body)
    reason = (first.get("ctx") or {}).get("error")
    if isinstance(reason, CompositionError):
        # The spec's own validator names the part at fault, relative to the model that raised it.
        param = f"{param}.{reason.param}" if param else reason.param
        return error_response(str(reason), status_code=status, param=param, code="invalid_combination")
    if first.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        # Pydantic blames the union (`method`); the field the client got wrong is its tag.
        tag = str((first.get("ctx") or {}).get("discriminator", "type")).strip("'")
        param = f"{param}.{tag}" if param else tag
    if param is None and first["loc"][:1] == ("body",):
        # The body as a whole is at fault (absent, or JSON that is not an object).
        return _body_error(first, exc.body, status)
    # A validator's ValueError reads better without pydantic's "Value error, " in front of it.
    detail = str(reason) if isinstance(reason, ValueError) else first["msg"]
    message = f"{param}: {detail}" if param else detail
    return error_response(message, status_code=status, param=param, code=first.get("type", "invalid_value"))


def _body_error(first: Mapping[str, Any], body: Any, status: int) -> JSONResponse:
    if first.get("type") == "missing":
        message = "request body is missing"
    elif not isinstance(body, dict):
        message = f"request body must be a JSON object, not {_json_kind(body)}"
    else:
        message = f"body: {first['msg']}"
    return error_response(message, status_code=status, param="body", code=first.get("type", "invalid_value"))


def _json_kind(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def field_path(loc: Sequence[Any], body: Any) -> str | None:
    """`("body", "method", "lora", "r")` → `"method.r"`: dotted, list indices in brackets.

    Pydantic puts a discriminated union's tag into `loc`; it is not a field the client wrote, so
    a step that is absent from the submitted body but equals that object's `type` is skipped. A
    union of plain values (`"epochs": 3` or `"auto"`) puts the member's name after the field
    (`epochs.constrained-int`): nothing under a value the client sent as a string or a number is a
    field, so the path ends there.
    """
    steps = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    current = body if loc and loc[0] == "body" else None
    path = ""
    for index, step in enumerate(steps):
        if isinstance(current, str | int | float | bool):
            break
        if isinstance(current, dict) and current.get("type") == step:
            # The tag is skipped; a field named like it (OpenAI's `{"type": "supervised", "supervised":
            # ...}`) follows it in `loc` and is the client's own.
            following = steps[index + 1] if index + 1 < len(steps) else None
            if step not in current or following == step:
                continue
        if isinstance(step, int):
            path += f"[{step}]"
        else:
            path += f".{step}" if path else str(step)
        current = _child(current, step)
    return path or None


def _child(value: Any, step: Any) -> Any:
    if isinstance(value, dict):
        return value.get(step)
    if isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
        return value[step]
    return None


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status_code = exc.status_code
    if status_code == 404:
        message = f"no route matches {request.method} {request.url.path}"
        code = "route_not_found"
    elif status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
        code = "method_not_allowed"
    else:
        message = str(exc.detail)
        code = None
    return error_response(message, status_code=status_code, code=code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log only: internals never reach the client.
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response("internal server error", status_code=500, code="internal_error")
