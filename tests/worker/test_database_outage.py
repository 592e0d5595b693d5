"""The database going away while a job trains: a blip is ridden out (heartbeats, events and the end
are retried with backoff), an outage longer than database_outage_seconds fails the job with
`database_unavailable` once the database answers again."""

import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine
from core.models import JobEvent
from core.settings import Settings
from tests.worker.jobs import add_job, job_row
from worker.job_runner import run_job


class Outage:
    """Every statement of the job's engine fails as SQLite does when it cannot use the file, while on."""

    def __init__(self, engine: Engine) -> None:
        self.on = False
        self.refused = 0
        event.listen(engine, "before_cursor_execute", self._refuse)

    def _refuse(self, *_: Any) -> None:
        if self.on:
            self.refused += 1
            raise sqlite3.OperationalError("disk I/O error")


@pytest.fixture()
def job_engine(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[Engine]:
    """The worker's own engine; the test reads through `sessions`, which the outage spares."""
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


def metrics_steps(sessions: sessionmaker[Session], job_id: str) -> list[int]:
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
    with sessions() as session:
        return [e.data["step"] for e in session.scalars(query.order_by(JobEvent.id))]


def cut_off_once_training(
    sessions: sessionmaker[Session], job_id: str, outage: Outage, *, for_seconds: float
) -> threading.Thread:
    def cut() -> None:
        deadline = time.monotonic() + 60
        while not metrics_steps(sessions, job_id) and time.monotonic() < deadline:
            time.sleep(0.02)
        outage.on = True
        time.sleep(for_seconds)
        outage.on = False

    thread = threading.Thread(target=cut)
    thread.start()
    return thread


def test_a_database_blip_while_training_is_retried(
    settings: Settings, sessions: sessionmaker[Session], job_engine: Engine
) -> None:
    settings = settings.model_copy(update={"database_outage_seconds": 10.0})
    job_id = add_job(sessions, settings, epochs=4, logging_steps=1)
    outage = Outage(job_engine)
    cutter = cut_off_once_training(sessions, job_id, outage, for_seconds=1.0)
    status = run_job(
        job_id, settings=settings, sessions=sessionmaker(job_engine, expire_on_commit=False), worker="w"
    )
    cutter.join()

    assert outage.refused > 0
    assert status == "succeeded", job_row(sessions, job_id).error_message
    assert metrics_steps(sessions, job_id) == list(range(1, 17))  # no event lost, none twice


def test_an_outage_longer_than_the_bound_fails_the_job(
    settings: Settings, sessions: sessionmaker[Session], job_engine: Engine
) -> None:
    settings = settings.model_copy(update={"database_outage_seconds": 1.0})
    job_id = add_job(sessions, settings, epochs=50, logging_steps=1)
    outage = Outage(job_engine)
    cutter = cut_off_once_training(sessions, job_id, outage, for_seconds=1.6)
    status = run_job(
        job_id, settings=settings, sessions=sessionmaker(job_engine, expire_on_commit=False), worker="w"
    )
    cutter.join()

    job = job_row(sessions, job_id)
    assert status == "failed" and job.status == "failed"
    assert job.error_code == "database_unavailable"
    assert "1 seconds" in (job.error_message or "")
    assert list(settings.work_dir.iterdir()) == []
