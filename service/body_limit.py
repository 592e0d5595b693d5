"""A cap on request bodies other than uploads, answered in the API's error shape.

FastAPI reads a JSON body whole into memory before validating it; without a cap one request could
exhaust the server. Uploads are exempt: `service.storage` streams them to disk under their own,
larger limit. Starlette's own limiter answers in plain text, hence this small middleware.
"""

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response

# A job spec is a few hundred bytes; this leaves room for long metadata and module lists.
REQUEST_BODY_LIMIT_BYTES = 256 * 1024


def is_upload(scope: Scope) -> bool:
    return scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/files"


class RequestBodyLimit:
    """Read a body up to `limit` bytes, then hand it to the app; answer 413 beyond that."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int = REQUEST_BODY_LIMIT_BYTES,
        exempt: Callable[[Scope], bool] = is_upload,
    ) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        body = await self._read_body(receive)
        if body is None:
            await self._too_large(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (chunked bodies declare no length)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # the client left; the app will notice on its own receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            f"request body is larger than {self.limit} bytes", status_code=413, code="request_too_large"
        )
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that first returns the buffered body, then defers to the real one (disconnects)."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
