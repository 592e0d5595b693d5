"""`Idempotency-Key` on the creating routes (POST /v1/files, POST /v1/jobs): a client that retries
after a timeout gets the first response instead of a second job.

As Stripe and OpenAI document the header: the first request with a key runs and its successful
response is kept; the same key with the same request replays that response (same status and body,
and `Idempotent-Replayed: true`); the same key with another request is refused (422), and so is a
second request while the first still runs (409), so two racing retries never both create. Errors
are not kept, so a retry after fixing the request runs. Keys are per owner and route, and kept for
`idempotency_ttl_seconds` (expired ones are purged as new keys arrive); a dry run is not kept.

The response is recorded in the same transaction as what it created (`record` before the
resource's COMMIT), so a process that dies mid-request leaves either both or neither: a key whose
request died before its COMMIT is freed after `IN_FLIGHT_SECONDS`.
"""

import hashlib
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.models import IdempotencyKey, utcnow
from core.settings import Settings
from service.crud import idempotency as crud
from service.errors import ApiError, Conflict

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# Printable ASCII without spaces: a UUID, a ULID, a hash; what a header carries without escaping.
KEY_PATTERN = rf"^[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}$"
# A request still unanswered after this long died with its process (nothing it did was committed).
IN_FLIGHT_SECONDS = 600
HEADER_DESCRIPTION = (
    "A key of your choosing (e.g. a UUID; 1-255 printable ASCII characters, no spaces) that makes a "
    "retry safe: the same key with the same request replays the first successful response (same "
    "status and body, header `Idempotent-Replayed: true`) instead of creating again; the same key with "
    "a different request answers 422 `idempotency_key_reused`; while the first request still runs, 409 "
    "`idempotency_key_in_use`. Errors are not kept (a corrected retry runs); keys are per API key owner "
    "and route, and kept for DELTATUNE_IDEMPOTENCY_TTL_SECONDS (24 h by default)."
)

KeyHeader = Annotated[
    str | None,
    Header(alias=HEADER, description=HEADER_DESCRIPTION, max_length=MAX_KEY_LENGTH, pattern=KEY_PATTERN),
]


@dataclass(frozen=True)
class IdempotentRequest:
    """A request that carried a key: where it went, its key, and the hash of what it sent."""

    route: str
    key: str
    request_hash: str


def request_hash(method: str, path: str, parts: Iterable[bytes | str]) -> str:
    """sha256 over the method, the path and each part, each prefixed by its length (unambiguous)."""
    digest = hashlib.sha256()
    for part in (method, path, *parts):
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


async def json_request(request: Request, key: KeyHeader = None) -> IdempotentRequest | None:
    """The key of a JSON request, hashed with its body's bytes (already read and cached by FastAPI)."""
    if key is None:
        return None
    body = await request.body()
    path = request.url.path
    return IdempotentRequest(f"POST {path}", key, request_hash(request.method, path, [body]))


JsonIdempotency = Annotated[IdempotentRequest | None, Depends(json_request)]


class Idempotency:
    """One request's use of its key: a response to replay, or the key reserved for it to `record`."""

    def __init__(self, session: Session, row: IdempotencyKey | None, replay: Response | None) -> None:
        self._session = session
        self._row = row
        self._key_id = row.id if row is not None else None
        self.replay = replay
        self.recorded = False

    def record(self, response: Response) -> Response:
        """Keep `response` for retries: call it before the COMMIT of what the request created."""
        if self._row is not None:
            self._row.response_status = response.status_code
            self._row.response_body = bytes(response.body).decode()
            self._session.add(self._row)
            self.recorded = True
        return response

    def release(self) -> None:
        """Free the key (an error, a dry run): the next request with it runs afresh."""
        if self._key_id is None:
            return
        try:
            self._session.rollback()  # whatever the failed request left pending
            if self.recorded and crud.has_response(self._session, key_id=self._key_id):
                return  # the response was committed with what it created: retries must replay it
            crud.delete_key(self._session, key_id=self._key_id)
        except SQLAlchemyError as error:
            # The database went away: the key frees itself after IN_FLIGHT_SECONDS.
            logger.warning("could not free idempotency key %s: %s", self._key_id, type(error).__name__)


@contextmanager
def idempotent(
    session: Session, settings: Settings, *, owner_id: str, request: IdempotentRequest | None
) -> Iterator[Idempotency]:
    """Reserve the request's key (or find the response to replay) for the block; a key whose
    response the block did not `record` (an error raised, a dry run) is freed at its end."""
    if request is None:
        yield Idempotency(session, None, None)
        return
    call = _claim(session, settings, owner_id=owner_id, request=request)
    try:
        yield call
    except BaseException:
        call.release()
        raise
    if not call.recorded:
        call.release()


def _claim(session: Session, settings: Settings, *, owner_id: str, request: IdempotentRequest) -> Idempotency:
    now = utcnow()
    for _ in range(3):  # a key freed or expired between our INSERT and our SELECT: try again
        crud.purge_expired(session, before=now - timedelta(seconds=settings.idempotency_ttl_seconds))
        row = crud.reserve_key(
            session,
            owner_id=owner_id,
            route=request.route,
            key=request.key,
            request_hash=request.request_hash,
            now=now,
        )
        if row is not None:
            return Idempotency(session, row, None)
        existing = crud.get_key(session, owner_id=owner_id, route=request.route, key=request.key)
        if existing is None:
            continue
        if existing.request_hash != request.request_hash:
            raise ApiError(
                f"this {HEADER} was already used for a different request to {request.route}; "
                "send a new key for a new request",
                status_code=422,
                param=HEADER,
                code="idempotency_key_reused",
            )
        if existing.response_status is None:
            if _aware(existing.created_at) < now - timedelta(seconds=IN_FLIGHT_SECONDS):
                crud.delete_key(session, key_id=existing.id)  # its request died before committing
                continue
            raise _in_use()
        replay = Response(
            content=existing.response_body,
            status_code=existing.response_status,
            media_type="application/json",
            headers={REPLAYED_HEADER: "true"},
        )
        return Idempotency(session, None, replay)
    raise _in_use()


def _in_use() -> Conflict:
    return Conflict(
        f"a request with this {HEADER} is still being processed; retry once it has answered",
        param=HEADER,
        code="idempotency_key_in_use",
    )


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every timestamp deltatune stores is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
