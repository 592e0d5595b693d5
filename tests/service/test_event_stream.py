"""GET /v1/jobs/{id}/events/stream over a real uvicorn server: events live, resumed, kept alive, ended.

The server runs in a thread of the test (tests/service/live_server.py), so the test writes rows as a
worker would while a client reads the stream over a real socket, and reads the app's own count of
open streams.
"""

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event as sa_event
from sqlalchemy import select

from core.models import JobEvent, Owner
from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from tests.integration.server import free_port
from tests.service.conftest import key_headers
from tests.service.helpers import create_job, set_job
from tests.service.live_server import LiveServer
from tests.worker.processes import clean_environment, wait_for


@dataclass
class Message:
    """One server-sent event as it came over the wire (a comment-only block has just `comments`)."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return json.loads(self.fields["data"])


def messages(response: httpx.Response) -> Iterator[Message]:
    """The stream's blocks, each ended by a blank line; raw lines, so the wire format is what is tested."""
    current = Message()
    for line in response.iter_lines():
        if line == "":
            yield current
            current = Message()
        elif line.startswith(":"):
            current.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(": ")
            current.fields[name] = value


@pytest.fixture
def stream_settings(tmp_path: Path, tiny_bert_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        model_dirs=[tiny_bert_dir.parent],
        event_stream_poll_seconds=0.05,
        event_stream_keep_alive_seconds=0.3,
        max_event_streams_per_owner=2,
    )


@pytest.fixture
def stream_app(stream_settings: Settings) -> FastAPI:
    stream_settings.data_dir.mkdir(parents=True)
    upgrade_to_head(stream_settings.database_url)
    return create_app(stream_settings)


@pytest.fixture
def live(stream_app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(stream_app) as server:
        yield server


@pytest.fixture
def alice(stream_app: FastAPI) -> dict[str, str]:
    return key_headers(stream_app, "alice")


@pytest.fixture
def job_id(stream_app: FastAPI, alice: dict[str, str]) -> str:
    with TestClient(stream_app) as client:
        return str(create_job(client, alice)["id"])


def add_event(app: FastAPI, job_id: str, type_: str = "metrics", **data: Any) -> int:
    with app.state.sessionmaker() as session:
        row = JobEvent(job_id=job_id, type=type_, message=f"{type_} {data}", data=data)
        session.add(row)
        session.commit()
        return row.id


def owner_id(app: FastAPI, name: str) -> str:
    with app.state.sessionmaker() as session:
        return str(session.scalar(select(Owner.id).where(Owner.name == name)))


def end_job(app: FastAPI, job_id: str, status: str = "succeeded") -> int:
    """As a worker ends a job: the status and its status event in one transaction."""
    set_job(app, job_id, status=status)
    return add_event(app, job_id, "status", status=status)


def stream(live: LiveServer, job_id: str, headers: dict[str, str], **params: Any) -> Any:
    return httpx.stream(
        "GET", f"{live.url}/v1/jobs/{job_id}/events/stream", headers=headers, params=params, timeout=10
    )


def wait_until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_events_arrive_live_oldest_first_then_end_carries_the_job(
    live: LiveServer, stream_app: FastAPI, alice: dict[str, str], job_id: str
) -> None:
    first = add_event(stream_app, job_id, step=1)
    with stream(live, job_id, alice) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = messages(response)
        message = next(received)
        assert message.fields["id"] == str(first) and message.fields["event"] == "metrics"
        # Written while the client watches: it arrives without the client asking again.
        second = add_event(stream_app, job_id, step=2)
        message = next(m for m in received if not m.comments)
        assert message.fields["id"] == str(second)
        ended = end_job(stream_app, job_id)
        rest = [m for m in received if not m.comments]  # ends: the server closes the stream
    assert [m.fields.get("id") for m in rest] == [str(ended), None]
    assert rest[0].fields["event"] == "status" and rest[-1].fields["event"] == "end"

    with TestClient(stream_app) as client:
        job = client.get(f"/v1/jobs/{job_id}", headers=alice).json()
        listed = client.get(f"/v1/jobs/{job_id}/events", headers=alice).json()["data"]
    assert rest[-1].data == job and job["status"] == "succeeded"
    # Each event's data is the very object GET /events lists.
    assert [message.data, rest[0].data] == listed[1:]


def test_a_stream_resumes_after_last_event_id_which_wins_over_after(
    live: LiveServer, stream_app: FastAPI, alice: dict[str, str], job_id: str
) -> None:
    ids = [add_event(stream_app, job_id, step=step) for step in (1, 2, 3)]
    ids.append(end_job(stream_app, job_id, "failed"))

    def ids_sent(headers: dict[str, str], **params: Any) -> list[str | None]:
        with stream(live, job_id, headers, **params) as response:
            return [m.fields.get("id") for m in messages(response)]

    assert ids_sent(alice | {"Last-Event-ID": str(ids[0])}, after=ids[2]) == [*map(str, ids[1:]), None]
    assert ids_sent(alice, after=ids[2]) == [str(ids[3]), None]
    assert ids_sent(alice | {"Last-Event-ID": str(ids[3])}) == [None]  # nothing left: only the end


def test_a_quiet_stream_sends_keep_alives(
    live: LiveServer, stream_app: FastAPI, alice: dict[str, str], job_id: str
) -> None:
    started = time.monotonic()
    with stream(live, job_id, alice) as response:
        received = messages(response)
        keep_alives = [next(received) for _ in range(3)]
    elapsed = time.monotonic() - started
    assert all(m.comments == ["keep-alive"] and not m.fields for m in keep_alives)
    assert 0.8 <= elapsed < 5  # every 0.3 s here; 15 s by default


def test_a_backlog_longer_than_one_read_is_sent_whole(
    live: LiveServer, stream_app: FastAPI, alice: dict[str, str], job_id: str
) -> None:
    with stream_app.state.sessionmaker() as session:
        session.add_all(
            JobEvent(job_id=job_id, type="metrics", message="m", data={"step": s}) for s in range(250)
        )
        session.commit()
    end_job(stream_app, job_id, "cancelled")
    with stream(live, job_id, alice) as response:
        sent = [m for m in messages(response) if not m.comments]
    assert [m.data["data"]["step"] for m in sent[:250]] == list(range(250))
    assert [m.fields["event"] for m in sent[250:]] == ["status", "end"]


def test_another_owners_or_an_unknown_job_answers_404_and_bad_cursors_422(
    live: LiveServer, stream_app: FastAPI, alice: dict[str, str], job_id: str
) -> None:
    mallory = key_headers(stream_app, "mallory")
    for headers, job in ((mallory, job_id), (alice, "ftjob-nope")):
        with stream(live, job, headers) as response:
            response.read()
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "job_not_found"
    with stream(live, job_id, {}) as response:
        response.read()
    assert response.status_code == 401
    for headers, params in ((alice | {"Last-Event-ID": "abc"}, {}), (alice, {"after": -1})):
        with stream(live, job_id, headers, **params) as response:
            response.read()
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] in ("Last-Event-ID", "last-event-id", "after")


def test_a_client_that_leaves_stops_its_stream_and_frees_its_slot(
    live: LiveServer, stream_app: FastAPI, alice: dict[str, str], job_id: str
) -> None:
    queries: list[str] = []
    sa_event.listen(
        stream_app.state.engine, "before_cursor_execute", lambda *args: queries.append(str(args[2]))
    )
    slots, owner = stream_app.state.event_streams, owner_id(stream_app, "alice")
    add_event(stream_app, job_id, step=1)
    with stream(live, job_id, alice) as response:
        next(messages(response))
    # The client closed the connection: the generator is cancelled, its slot given back...
    wait_until(lambda: slots.held(owner) == 0)
    # ... and it reads the database no more (it polled every 0.05 s while open).
    reads = len(queries)
    time.sleep(0.5)
    assert len(queries) == reads


def test_an_owner_may_hold_only_so_many_streams(
    live: LiveServer, stream_app: FastAPI, alice: dict[str, str], job_id: str
) -> None:
    with stream(live, job_id, alice) as one, stream(live, job_id, alice) as two:
        assert one.status_code == two.status_code == 200
        with stream(live, job_id, alice) as three:
            three.read()
        assert three.status_code == 429
        assert three.json()["error"]["code"] == "too_many_streams" and "Retry-After" in three.headers
        with TestClient(stream_app) as client:
            other = key_headers(stream_app, "bob")
            bobs_job = create_job(client, other)["id"]
        with stream(live, bobs_job, other) as bobs:
            assert bobs.status_code == 200  # the bound is per owner
    wait_until(lambda: stream_app.state.event_streams.held(owner_id(stream_app, "alice")) == 0)
    with stream(live, job_id, alice) as again:
        assert again.status_code == 200


def test_stopping_the_server_ends_open_streams_at_once(
    stream_app: FastAPI, stream_settings: Settings, alice: dict[str, str], job_id: str, tmp_path: Path
) -> None:
    """`deltatune api` (as `serve` runs it) on this test's database: SIGTERM with a client watching a
    job that never ends must not wait for the client to leave."""
    port = free_port()
    env = clean_environment(
        DELTATUNE_DATA_DIR=str(stream_settings.data_dir),
        DELTATUNE_MODEL_DIRS=json.dumps([str(path) for path in stream_settings.model_dirs]),
        DELTATUNE_EVENT_STREAM_KEEP_ALIVE_SECONDS="0.2",
    )
    log = tmp_path / "api.log"
    with log.open("wb") as output:
        api = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "api", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=output,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(f"{url}/healthz"), timeout=60, what="deltatune api", log=log.read_text)
        with httpx.stream(
            "GET", f"{url}/v1/jobs/{job_id}/events/stream", headers=alice, timeout=10
        ) as response:
            received = messages(response)
            assert next(received).comments == ["keep-alive"]
            api.send_signal(signal.SIGTERM)
            # uvicorn waits for open responses to end: without the drain it would wait for ever here.
            assert api.wait(timeout=20) == 0, log.read_text()
            # The stream closed with the server and sent no `end`, so the client reconnects. Whether
            # uvicorn cuts the body or sse-starlette ends it first differs between their releases; a
            # client (EventSource, `jobs watch`) reconnects after either.
            after_stop: list[Message] = []
            with contextlib.suppress(httpx.RemoteProtocolError):
                for message in received:
                    after_stop.append(message)
            assert not [m for m in after_stop if m.fields.get("event") == "end"]
    finally:
        if api.poll() is None:
            api.kill()
            api.wait()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
