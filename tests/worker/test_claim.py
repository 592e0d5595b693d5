"""The claim: of any number of deliveries racing for one queued job, exactly one runs it."""

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine
from core.models import Job, JobEvent
from core.schema_version import upgrade_to_head
from core.settings import Settings
from tests.integration.services import fresh_database
from tests.worker.jobs import add_job, job_row
from worker.lifecycle import JOBS


def status_events(sessions: sessionmaker[Session], job_id: str) -> list[JobEvent]:
    with sessions() as session:
        return list(
            session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "status"))
        )


def test_two_claims_one_winner(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)

    assert JOBS.claim(sessions, job_id, worker="first") is True
    assert JOBS.claim(sessions, job_id, worker="second") is False

    job = job_row(sessions, job_id)
    assert (job.status, job.worker) == ("running", "first")
    assert job.started_at is not None
    assert [event.data for event in status_events(sessions, job_id)] == [
        {"status": "running", "worker": "first"}
    ]


def race(sessions: sessionmaker[Session], job_id: str, deliveries: int) -> list[str]:
    """`deliveries` threads, each with its own connection, claim the job at once; returns the winners."""
    start = threading.Barrier(deliveries)
    wins: list[str] = []

    def deliver(name: str) -> None:
        start.wait()
        if JOBS.claim(sessions, job_id, worker=name):
            wins.append(name)

    threads = [threading.Thread(target=deliver, args=(f"worker-{n}",)) for n in range(deliveries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return wins


def assert_one_winner_each(sessions: sessionmaker[Session], settings: Settings, *, jobs: int) -> None:
    for _ in range(jobs):
        job_id = add_job(sessions, settings)
        wins = race(sessions, job_id, deliveries=6)
        assert len(wins) == 1, wins
        assert job_row(sessions, job_id).worker == wins[0]
        assert len(status_events(sessions, job_id)) == 1


def test_racing_claims_have_exactly_one_winner(sessions: sessionmaker[Session], settings: Settings) -> None:
    assert_one_winner_each(sessions, settings, jobs=3)


@pytest.fixture()
def postgres_sessions(postgres_server: str) -> Iterator[sessionmaker[Session]]:
    """A fresh PostgreSQL database migrated to head: concurrent transactions, as distributed workers run."""
    with fresh_database("deltatune_claim") as url:
        database_url = Settings(database_url=url).database_url
        upgrade_to_head(database_url)
        engine = make_engine(database_url)
        try:
            yield sessionmaker(engine, expire_on_commit=False)
        finally:
            engine.dispose()


@pytest.mark.integration
def test_racing_claims_on_postgresql_have_exactly_one_winner(
    postgres_sessions: sessionmaker[Session], settings: Settings
) -> None:
    # SQLite serialises writers on one file lock; PostgreSQL really runs the UPDATEs side by side, and
    # only the WHERE status = 'queued' re-checked after a row lock makes the second claim lose.
    assert_one_winner_each(postgres_sessions, settings, jobs=10)


def test_a_cancelled_job_is_not_claimed(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="cancelled"))

    assert JOBS.claim(sessions, job_id, worker="late") is False
    assert job_row(sessions, job_id).status == "cancelled"
    assert status_events(sessions, job_id) == []


def test_an_unknown_job_is_not_claimed(sessions: sessionmaker[Session]) -> None:
    assert JOBS.claim(sessions, "ftjob-does-not-exist", worker="w") is False
