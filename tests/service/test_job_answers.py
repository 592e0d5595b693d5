"""A job's kept answer bytes: the same bytes FastAPI wrote from the models, and never stale; over the
embedded default (SQLite) and PostgreSQL, whose JSON and timestamps come back differently."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from sqlalchemy import inspect

from core.models import Job
from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from service.crud import job_rows
from service.crud import jobs as crud
from service.crud.job_rows import NOT_ANSWERED
from service.job_answers import JobAnswers, job_object
from service.schemas.jobs import JobList, JobObject
from tests.integration.services import fresh_database
from tests.service.conftest import key_headers
from tests.service.helpers import create_job, publish_artifact, set_job


def model_bytes(app: FastAPI, job_ids: list[str], *, has_more: bool = False) -> tuple[bytes, list[bytes]]:
    """What FastAPI wrote before: a JobList (and each JobObject) from ORM rows, dumped by pydantic."""
    with app.state.sessionmaker() as session:
        objects = []
        for job_id in job_ids:
            job = session.get(Job, job_id)
            assert job is not None
            objects.append(job_object(job, crud.list_artifacts(session, job_id=job_id)))
    page = TypeAdapter(JobList).dump_json(JobList(data=objects, has_more=has_more), by_alias=True)
    return page, [TypeAdapter(JobObject).dump_json(o, by_alias=True) for o in objects]


def every_field_set(app: FastAPI, settings: Settings, job_id: str) -> None:
    """Every answered column away from its default, with text and numbers JSON writers disagree on."""
    publish_artifact(app, settings, job_id, {"adapter_config.json": b"{}", "weights/adapter.bin": b"x" * 7})
    moment = datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)
    set_job(
        app,
        job_id,
        started_at=moment,
        finished_at=moment,
        estimated_finish_at=moment,
        examples_seen=1234,
        trained_tokens=2**40,
        progress=1.0000001,
        metrics={"loss": 1e-05, "eval_accuracy": 0.1 + 0.2, "note": "précis ✓", "steps": 10**15},
        validation={"train": {"examples": 4, "tokens": 31, "warnings": ["ligne «3»"]}},
        error_code="oom",
        error_message="out of memory — retry with batch_size 1",
        error_param="hyperparameters.batch_size",
        cancel_requested=True,
        pause_requested=True,
        webhook_url="https://hooks.example.com/ünïcode",
    )


def test_a_page_and_a_job_are_the_bytes_the_models_gave(
    client: TestClient, app: FastAPI, settings: Settings, auth: dict[str, str]
) -> None:
    check_bytes(client, app, settings, auth)


def test_a_kept_answer_follows_every_change_of_its_job(
    client: TestClient, app: FastAPI, settings: Settings, auth: dict[str, str]
) -> None:
    check_changes(client, app, settings, auth)


@pytest.fixture
def postgres_app(
    postgres_server: str, tmp_path: Path, tiny_bert_dir: Path
) -> Iterator[tuple[FastAPI, Settings]]:
    with fresh_database("deltatune_answers") as url:
        settings = Settings(data_dir=tmp_path / "data", database_url=url, model_dirs=[tiny_bert_dir.parent])
        upgrade_to_head(url)
        app = create_app(settings)
        yield app, settings
        app.state.engine.dispose()


@pytest.mark.integration
def test_over_postgres_too(postgres_app: tuple[FastAPI, Settings]) -> None:
    app, settings = postgres_app
    auth = key_headers(app, "alice")
    with TestClient(app) as client:
        check_bytes(client, app, settings, auth)
        check_changes(client, app, settings, auth)


def check_bytes(client: TestClient, app: FastAPI, settings: Settings, auth: dict[str, str]) -> None:
    full = create_job(client, auth, metadata={"name": "crème brûlée", "emoji": "🚀"})["id"]
    every_field_set(app, settings, full)
    running = create_job(client, auth)["id"]
    set_job(
        app, running, status="running", estimated_finish_at=datetime(2026, 3, 1, tzinfo=UTC), progress=0.5
    )
    queued = create_job(client, auth)["id"]
    newest_first = [queued, running, full]

    page, jobs = model_bytes(app, newest_first)
    for _ in range(2):  # made, then kept
        assert client.get("/v1/jobs", headers=auth).content == page
        for job_id, job in zip(newest_first, jobs, strict=True):
            answer = client.get(f"/v1/jobs/{job_id}", headers=auth)
            assert answer.content == job
            assert answer.headers["content-type"] == "application/json"

    first_two, _ = model_bytes(app, newest_first[:2], has_more=True)
    assert client.get("/v1/jobs?limit=2", headers=auth).content == first_two
    last, _ = model_bytes(app, newest_first[2:])
    assert client.get(f"/v1/jobs?limit=2&after={running}", headers=auth).content == last


def check_changes(client: TestClient, app: FastAPI, settings: Settings, auth: dict[str, str]) -> None:
    job_id = create_job(client, auth)["id"]

    def listed() -> dict[str, object]:
        page = client.get("/v1/jobs", headers=auth).json()["data"]
        assert client.get(f"/v1/jobs/{job_id}", headers=auth).json() == page[0]
        return dict(page[0])

    assert listed()["status"] == "queued"
    set_job(app, job_id, status="running", progress=0.25, metrics={"loss": 2.0})
    job = listed()
    assert (job["status"], job["progress"], job["metrics"]) == ("running", 0.25, {"loss": 2.0})
    set_job(app, job_id, progress=0.5, metrics={"loss": 1.5}, examples_seen=64)
    job = listed()
    assert (job["progress"], job["metrics"], job["examples_seen"]) == (0.5, {"loss": 1.5}, 64)
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 200
    assert listed()["cancel_requested"] is True
    publish_artifact(app, settings, job_id, {"adapter_config.json": b"{}"})
    job = listed()
    assert job["status"] == "succeeded"
    assert [a["name"] for a in job["artifacts"]] == ["adapter_config.json"]  # type: ignore[union-attr]
    publish_artifact(app, settings, job_id, {"adapter_model.safetensors": b"xyz"})  # an artifact row alone
    assert len(listed()["artifacts"]) == 2  # type: ignore[arg-type]

    assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 200
    assert job_id not in [job["id"] for job in client.get("/v1/jobs", headers=auth).json()["data"]]
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 404


def test_an_owner_sees_only_their_jobs_whatever_another_has_kept(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    theirs = create_job(client, other_auth)["id"]
    assert [job["id"] for job in client.get("/v1/jobs", headers=other_auth).json()["data"]] == [theirs]
    assert client.get("/v1/jobs", headers=auth).json()["data"] == []
    assert client.get(f"/v1/jobs/{theirs}", headers=auth).status_code == 404
    assert client.get(f"/v1/jobs?after={theirs}", headers=auth).status_code == 400


def test_unchanged_rows_get_the_same_bytes_and_the_oldest_go_first(
    client: TestClient, app: FastAPI, auth: dict[str, str]
) -> None:
    ids = [create_job(client, auth)["id"] for _ in range(3)]
    answers = JobAnswers(max_jobs=2)
    with app.state.sessionmaker() as session:
        rows, _ = job_rows.job_rows(session, owner_id=owner_of(app, ids[0]), limit=3)
    made = [answers.answer(row, ()) for row in rows]
    assert len(answers) == 2
    assert answers.answer(rows[2], ()) is made[2]  # kept: the same object, not made again
    assert answers.answer(rows[0], ()) is not made[0]  # the least recently used went out
    assert answers.answer(rows[0], ()) == made[0]


def test_columns_no_answer_shows_leave_the_kept_bytes_alone(
    client: TestClient, app: FastAPI, auth: dict[str, str]
) -> None:
    job_id = create_job(client, auth)["id"]
    answers = JobAnswers()

    def answer() -> bytes:
        with app.state.sessionmaker() as session:
            row = job_rows.job_row(session, owner_id=owner_of(app, job_id), job_id=job_id)
        assert row is not None
        return answers.answer(row, ())

    before = answer()
    set_job(app, job_id, heartbeat_at=datetime.now(UTC), attempt=3, worker="gpu-1", dispatches=2)
    assert answer() is before  # a lease's heartbeat does not make the answer anew
    set_job(app, job_id, trained_tokens=5)
    assert answer() != before


def test_not_answered_names_columns_of_jobs() -> None:
    assert {attr.key for attr in inspect(Job).column_attrs} >= NOT_ANSWERED


def owner_of(app: FastAPI, job_id: str) -> str:
    with app.state.sessionmaker() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.owner_id
