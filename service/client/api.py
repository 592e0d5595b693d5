"""A small client of deltatune's REST API over httpx: what the `deltatune` client commands call.

Every failure becomes one of two exceptions: `RequestRefused`, carrying the server's own error
(`{"error": {"message", "param", "code"}}`), or `ServerUnreachable`, when no answer came at all.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from service.client.sse import ServerSentEvent, read_events

# Long enough for an upload the server validates line by line; a stream's reads wait longer, see below.
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# The server sends a keep-alive every 15 s by default: a read that waits 4 times that is a dead line.
STREAM_TIMEOUT = httpx.Timeout(60.0, connect=10.0, read=60.0)


class RequestRefused(Exception):
    """The server answered with an error: its message, the field it names, its code and status."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


class ServerUnreachable(Exception):
    """No answer: nothing listens at the URL, the name does not resolve, or the connection broke."""


class DeltatuneClient:
    def __init__(self, url: str, api_key: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "deltatune-cli"},
            timeout=TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "DeltatuneClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- files and models ------------------------------------------------------------------------

    def upload_file(self, path: Path, *, purpose: str = "fine-tune") -> dict[str, Any]:
        with path.open("rb") as handle:
            return self._json(
                "POST",
                "/v1/files",
                files={"file": (path.name, handle, "application/jsonl")},
                data={"purpose": purpose},
            )

    def list_models(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/models")["data"])

    # --- jobs ------------------------------------------------------------------------------------

    def create_job(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/v1/jobs", json=spec)

    def list_jobs(self, *, limit: int) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/jobs", params={"limit": limit})["data"])

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{_segment(job_id)}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{_segment(job_id)}/cancel")

    def delete_job(self, job_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/jobs/{_segment(job_id)}")

    def list_artifacts(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{_segment(job_id)}/artifacts")

    @contextmanager
    def job_events(self, job_id: str, *, last_event_id: int | None) -> Iterator[Iterator[ServerSentEvent]]:
        """The job's live event stream from after `last_event_id`, as parsed server-sent events."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        path = f"/v1/jobs/{_segment(job_id)}/events/stream"
        with self._stream("GET", path, headers=headers, timeout=STREAM_TIMEOUT) as response:
            yield read_events(response.iter_lines())

    @contextmanager
    def download(self, url: str) -> Iterator[httpx.Response]:
        """An artifact or archive download (a path the server listed), its body not read yet."""
        with self._stream("GET", url) as response:
            yield response

    # --- the one way requests are made -----------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from error
        _raise_for_error(response)
        body: dict[str, Any] = response.json()
        return body

    @contextmanager
    def _stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.is_error:
                    response.read()
                    _raise_for_error(response)
                yield response
        except httpx.TransportError as error:
            raise self._unreachable(error) from error

    def _unreachable(self, error: httpx.TransportError) -> ServerUnreachable:
        if isinstance(error, httpx.ConnectError):
            return ServerUnreachable(f"cannot connect to {self.url}: {error or 'connection refused'}")
        return ServerUnreachable(f"the connection to {self.url} failed: {type(error).__name__}: {error}")


def _raise_for_error(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        error = response.json()["error"]
        raise RequestRefused(
            response.status_code, str(error["message"]), param=error.get("param"), code=error.get("code")
        )
    except (ValueError, KeyError, TypeError):
        # Not deltatune's error shape (a proxy in between, or not deltatune at all): show what came.
        text = response.text.strip()[:300] or response.reason_phrase
        raise RequestRefused(response.status_code, f"HTTP {response.status_code}: {text}") from None


def _segment(job_id: str) -> str:
    """An id as one path segment: a stray '/' or '?' must not reach another route."""
    return quote(job_id, safe="")
