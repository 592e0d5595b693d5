"""GET /v1/jobs/{id}/events/stream: a job's events as server-sent events, live, until the job ends.

Each event goes out as `id: <event id>`, `event: <type>`, `data: <the event object, as
GET /v1/jobs/{id}/events returns it>`, oldest first, from after the `Last-Event-ID` header (what a
reconnecting EventSource sends) or `?after=`. With nothing to send for a while, a `: keep-alive`
comment keeps proxies from closing the connection. Once the job has ended and its every event is
sent, a last `event: end` carries the job object and the stream closes.

The stream reads the database every `event_stream_poll_seconds` in a short session of its own on a
worker thread: no connection is held across its sleeps and the event loop never blocks on a query.
Within one read the job's status is read before its events, so a job seen ended has every event it
wrote visible to the events query (its last status event commits with its status).

sse-starlette rather than a plain StreamingResponse: it watches for the client's disconnect and
cancels the stream at once (a plain response notices only when a write fails), and it ends open
streams when uvicorn shuts down, so stopping `deltatune serve` never waits for a watching client.
"""

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from sqlalchemy.orm import Session, sessionmaker
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from core.db import database_unavailable
from core.models import JobStatus
from service.crud import jobs as crud
from service.deps import CurrentOwner, SessionDep, SettingsDep
from service.errors import ApiError
from service.routes.jobs import event_object, full_job_object, owned_job
from service.schemas.common import error_responses
from service.stream_slots import StreamSlots

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 422, 500, 503))

ENDED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
READ_LIMIT = 100  # events per read; a backlog is sent in reads of this many without waiting between them
MAX_EVENT_ID = 2**63 - 1  # event ids are 64-bit; a larger cursor would overflow the database's integer
SEPARATOR = "\n"
KEEP_ALIVE = ServerSentEvent(comment="keep-alive", sep=SEPARATOR)

EventId = Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID, description="The last event id already seen.")]
LastEventId = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=MAX_EVENT_ID,
        description="The last event id seen (EventSource sends it on reconnecting); wins over `after`.",
    ),
]


@dataclass(frozen=True)
class _Read:
    """What one poll found: events after the cursor, and the job object once nothing more will come."""

    events: list[ServerSentEvent]
    last_id: int | None
    more: bool  # a full read: read again at once
    end: ServerSentEvent | None


@router.get(
    "/{job_id}/events/stream",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "The job's events as server-sent events, then `event: end` with the job.",
        },
        **error_responses(404, 429),
    },
)
def stream_events(
    job_id: str,
    request: Request,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    after: EventId = None,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """Follow a job's events live (server-sent events), until it ends."""
    job = owned_job(session, owner.id, job_id)
    # The stream reads in sessions of its own; this one would otherwise keep a pooled connection for
    # the stream's whole life (FastAPI closes a request's dependencies only after the response).
    session.close()
    slots: StreamSlots = request.app.state.event_streams
    if not slots.take(owner.id):
        raise ApiError(
            f"you already have {settings.max_event_streams_per_owner} event streams open; close one first",
            status_code=429,
            code="too_many_streams",
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    owner_id = owner.id
    events = job_event_stream(
        request.app.state.sessionmaker,
        owner_id=owner_id,
        job_id=job.id,
        after=last_event_id if last_event_id is not None else after,
        poll_seconds=settings.event_stream_poll_seconds,
        keep_alive_seconds=settings.event_stream_keep_alive_seconds,
    )
    # ping=0: the stream sends its own keep-alives, only when it has been quiet.
    return _SlotHoldingStream(events, release=lambda: slots.give_back(owner_id), ping=0, sep=SEPARATOR)


class _SlotHoldingStream(EventSourceResponse):
    """Gives the owner's stream slot back however the response ends: the job ended, the client left,
    the server is stopping, or the stream never started."""

    def __init__(self, content: AsyncIterator[ServerSentEvent], *, release: Callable[[], None], **kw: object):
        super().__init__(content, **kw)  # type: ignore[arg-type]
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def job_event_stream(
    sessions: sessionmaker[Session],
    *,
    owner_id: str,
    job_id: str,
    after: int | None,
    poll_seconds: float,
    keep_alive_seconds: float,
) -> AsyncIterator[ServerSentEvent]:
    """The job's events after `after`, as they are written, then `end`; a keep-alive when quiet."""
    cursor = after
    quiet_since = anyio.current_time()
    while True:
        read = await anyio.to_thread.run_sync(_read_or_none, sessions, owner_id, job_id, cursor)
        if read is not None:
            for event in read.events:
                yield event
            if read.events:
                cursor, quiet_since = read.last_id, anyio.current_time()
            if read.end is not None:
                yield read.end
                return
            if read.more:
                continue
        if anyio.current_time() - quiet_since >= keep_alive_seconds:
            yield KEEP_ALIVE
            quiet_since = anyio.current_time()
        await anyio.sleep(min(poll_seconds, keep_alive_seconds))


def _read_or_none(
    sessions: sessionmaker[Session], owner_id: str, job_id: str, after: int | None
) -> _Read | None:
    """One poll; None while the database cannot be reached (the stream stays open and tries again)."""
    try:
        return _read(sessions, owner_id, job_id, after)
    except Exception as error:
        if not database_unavailable(error):
            raise
        logger.warning(
            "event stream of job %s: the database is unavailable (%s)", job_id, type(error).__name__
        )
        return None


def _read(sessions: sessionmaker[Session], owner_id: str, job_id: str, after: int | None) -> _Read:
    with sessions() as session:
        job = crud.get_job(session, owner_id=owner_id, job_id=job_id)
        if job is None:  # gone since the stream opened (its owner deleted): nothing more will come
            return _Read([], after, more=False, end=ServerSentEvent(event="end", data="null", sep=SEPARATOR))
        ended = job.status in ENDED  # read before the events: see the module's docstring
        rows, more = crud.list_events(session, job_id=job_id, limit=READ_LIMIT, after=after)
        events = [
            ServerSentEvent(
                event_object(row).model_dump_json(), id=str(row.id), event=row.type, sep=SEPARATOR
            )
            for row in rows
        ]
        end = None
        if ended and not more:
            end = ServerSentEvent(full_job_object(session, job).model_dump_json(), event="end", sep=SEPARATOR)
        return _Read(events, rows[-1].id if rows else after, more=more, end=end)
