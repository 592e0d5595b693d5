"""Idempotency-Key on POST /v1/jobs and POST /v1/files: a retry replays the first response, a reused
key with another request is refused, racing retries create once; on SQLite and on PostgreSQL."""

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from core.models import File, IdempotencyKey, Job, Owner, utcnow
from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from service.idempotency import IN_FLIGHT_SECONDS, request_hash
from tests.integration.services import fresh_database
from tests.service.conftest import key_headers
from tests.service.helpers import (
    GOOD_LINES,
    broker_messages,
    files_on_disk,
    job_body,
    jsonl,
    upload,
    uploaded_file_id,
)

KEY = "8e9f7c2a-3d41-4b0e-9c55-0f7d1a2b3c4d"


def keyed(headers: dict[str, str], key: str = KEY) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def count(app: FastAPI, model: type[Any]) -> int:
    with app.state.sessionmaker() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_the_same_job_request_twice_creates_one_job_and_replays_the_first_response(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    body = job_body(uploaded_file_id(client, auth))
    first = client.post("/v1/jobs", headers=keyed(auth), json=body)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = client.post("/v1/jobs", headers=keyed(auth), json=body)
    assert again.status_code == 201
    assert again.content == first.content  # the first response, byte for byte
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(app, Job) == 1
    assert [message["args"] for message in broker_messages(settings)] == [[first.json()["id"]]]


def test_the_same_key_with_another_body_is_refused_saying_so(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    file_id = uploaded_file_id(client, auth)
    assert client.post("/v1/jobs", headers=keyed(auth), json=job_body(file_id)).status_code == 201
    other = client.post("/v1/jobs", headers=keyed(auth), json=job_body(file_id, metadata={"run": "two"}))
    assert other.status_code == 422
    error = other.json()["error"]
    assert (error["param"], error["code"]) == ("Idempotency-Key", "idempotency_key_reused")
    assert "different request" in error["message"]
    assert count(app, Job) == 1


def test_an_error_is_not_kept_so_a_corrected_retry_with_the_key_runs(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    refused = client.post("/v1/jobs", headers=keyed(auth), json=job_body("file-missing"))
    assert refused.status_code == 400, refused.text
    invalid = client.post("/v1/jobs", headers=keyed(auth), json={"base_model": "tiny-bert"})
    assert invalid.status_code == 422  # another body: no conflict, the error above was not kept
    fixed = client.post("/v1/jobs", headers=keyed(auth), json=job_body(uploaded_file_id(client, auth)))
    assert fixed.status_code == 201, fixed.text
    assert count(app, IdempotencyKey) == 1


def test_a_dry_run_is_not_kept(app: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    file_id = uploaded_file_id(client, auth)
    for _ in range(2):
        dry = client.post("/v1/jobs", headers=keyed(auth), json=job_body(file_id, dry_run=True))
        assert dry.status_code == 200 and "Idempotent-Replayed" not in dry.headers
    assert count(app, IdempotencyKey) == 0
    assert client.post("/v1/jobs", headers=keyed(auth), json=job_body(file_id)).status_code == 201


def test_keys_are_per_owner(
    app: FastAPI, client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    mine = client.post("/v1/jobs", headers=keyed(auth), json=job_body(uploaded_file_id(client, auth)))
    theirs = client.post(
        "/v1/jobs", headers=keyed(other_auth), json=job_body(uploaded_file_id(client, other_auth))
    )
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in theirs.headers and mine.json()["id"] != theirs.json()["id"]
    assert count(app, Job) == 2


def age_keys(app: FastAPI, seconds: float) -> None:
    with app.state.sessionmaker() as session:
        session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(seconds=seconds)))
        session.commit()


def test_an_expired_key_is_purged_and_creates_again(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    body = job_body(uploaded_file_id(client, auth))
    first = client.post("/v1/jobs", headers=keyed(auth), json=body).json()["id"]
    age_keys(app, settings.idempotency_ttl_seconds + 1)
    again = client.post("/v1/jobs", headers=keyed(auth), json=body)
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert again.json()["id"] != first
    assert count(app, IdempotencyKey) == 1  # the expired one is gone


def hold_key(app: FastAPI, body: dict[str, Any]) -> None:
    """Leave alice's key in flight, as a first request still running (or one whose process died) does."""
    with app.state.sessionmaker() as session:
        owner = session.scalar(select(Owner.id).where(Owner.name == "alice"))
        assert owner is not None
        hashed = request_hash("POST", "/v1/jobs", [json.dumps(body).encode()])
        session.add(IdempotencyKey(owner_id=owner, route="POST /v1/jobs", key=KEY, request_hash=hashed))
        session.commit()


def test_a_key_whose_first_request_is_still_running_is_409_and_freed_once_abandoned(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    body = job_body(uploaded_file_id(client, auth))
    hold_key(app, body)
    raw = {
        "content": json.dumps(body).encode(),
        "headers": {**keyed(auth), "Content-Type": "application/json"},
    }
    busy = client.post("/v1/jobs", **raw)
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_key_in_use"
    assert count(app, Job) == 0
    age_keys(app, IN_FLIGHT_SECONDS + 1)  # its process died before it committed anything
    assert client.post("/v1/jobs", **raw).status_code == 201


@pytest.mark.parametrize("key", [b"", b"x" * 256, b"has space", "naïve".encode(), b"tab\there"])
def test_a_malformed_key_is_422_naming_the_header(
    client: TestClient, auth: dict[str, str], key: bytes
) -> None:
    headers: dict[str, Any] = {**auth, "Idempotency-Key": key}  # bytes: a header as a hostile client sends it
    for response in (
        client.post("/v1/jobs", headers=headers, json=job_body("file-x")),
        client.post(
            "/v1/files",
            headers=headers,
            files={"file": ("t.jsonl", jsonl(GOOD_LINES))},
            data={"purpose": "fine-tune"},
        ),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == "Idempotency-Key"


def test_the_same_upload_twice_stores_one_file(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    first = upload(client, keyed(auth))
    assert first.status_code == 201, first.text
    again = upload(client, keyed(auth))
    assert (again.status_code, again.content) == (201, first.content)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(app, File) == 1 and len(files_on_disk(settings.files_dir)) == 1
    other = upload(client, keyed(auth), jsonl(GOOD_LINES[:2] + GOOD_LINES[:1]))
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    renamed = upload(client, keyed(auth), filename="other.jsonl")
    assert renamed.status_code == 422  # the same bytes under another name are another request
    assert count(app, File) == 1 and files_on_disk(settings.data_dir / "uploads") == []


def test_a_refused_upload_is_not_kept(app: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    bad = upload(client, keyed(auth, "upload-1"), b'{"text": "no label"}\n{"oops"\n')
    assert bad.status_code == 422
    assert count(app, IdempotencyKey) == 0
    good = upload(client, keyed(auth, "upload-1"))
    assert good.status_code == 201 and "Idempotent-Replayed" not in good.headers


def test_the_header_is_documented_on_both_operations(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/files", "/v1/jobs"):
        (header,) = [p for p in paths[path]["post"]["parameters"] if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header" and not header.get("required")
        assert "replays the first successful response" in header["description"]
        assert "409" in paths[path]["post"]["responses"]


def race(app: FastAPI, headers: dict[str, str], body: dict[str, Any], racers: int) -> list[Any]:
    """`racers` threads posting the same keyed job at once, released together."""
    start = threading.Barrier(racers)
    responses: list[Any] = [None] * racers
    with TestClient(app) as client:

        def post(index: int) -> None:
            start.wait()
            responses[index] = client.post("/v1/jobs", headers=keyed(headers), json=body)

        threads = [threading.Thread(target=post, args=(index,)) for index in range(racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    return responses


def assert_one_job_from_the_race(app: FastAPI, settings: Settings, responses: list[Any]) -> None:
    created = [r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
    assert len(created) == 1, [(r.status_code, r.text) for r in responses]
    for response in responses:
        assert response.status_code in (201, 409), response.text
        if response.status_code == 201:
            assert response.json()["id"] == created[0].json()["id"]
        else:
            assert response.json()["error"]["code"] == "idempotency_key_in_use"
    assert count(app, Job) == 1
    assert len(broker_messages(settings)) == 1


def test_racing_retries_on_sqlite_create_one_job(
    app: FastAPI, auth: dict[str, str], settings: Settings
) -> None:
    with TestClient(app) as client:
        body = job_body(uploaded_file_id(client, auth))
    assert_one_job_from_the_race(app, settings, race(app, auth, body, racers=6))


@pytest.fixture
def postgres_app(
    postgres_server: str, tmp_path: Path, tiny_bert_dir: Path
) -> Iterator[tuple[FastAPI, Settings]]:
    with fresh_database("deltatune_idem") as url:
        settings = Settings(data_dir=tmp_path / "data", database_url=url, model_dirs=[tiny_bert_dir.parent])
        upgrade_to_head(settings.database_url)
        app = create_app(settings)
        yield app, settings
        app.state.engine.dispose()


@pytest.mark.integration
def test_racing_retries_on_postgres_create_one_job_and_one_message(
    postgres_app: tuple[FastAPI, Settings],
) -> None:
    app, settings = postgres_app
    headers = key_headers(app, "alice")
    with TestClient(app) as client:
        body = job_body(uploaded_file_id(client, headers))
    responses = race(app, headers, body, racers=8)
    assert_one_job_from_the_race(app, settings, responses)
    with TestClient(app) as client:
        replay = client.post("/v1/jobs", headers=keyed(headers), json=body)
        assert replay.headers["Idempotent-Replayed"] == "true"
        created = next(
            r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers
        )
        assert replay.content == created.content
        other = client.post(
            "/v1/jobs", headers=keyed(headers), json=job_body(body["training_file"], metadata={"run": "two"})
        )
        assert other.json()["error"]["code"] == "idempotency_key_reused"
