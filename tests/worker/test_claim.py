"""The claim: of any number of deliveries racing for one job, exactly one starts an attempt; a queued
job or one whose lease expired can be claimed, one under a fresh lease never, whatever the names."""

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
from tests.worker.jobs import add_job, claim, expire_lease, job_row, try_claim


def status_events(sessions: sessionmaker[Session], job_id: str) -> list[JobEvent]:
    with sessions() as session:
        return list(
            session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.type == "status")
                .order_by(JobEvent.id)
            )
        )


def test_two_claims_one_winner(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)

    attempt = claim(sessions, job_id, worker="first")
    assert try_claim(sessions, job_id, worker="second") is None

    assert attempt.number == 1
    job = job_row(sessions, job_id)
    assert (job.status, job.worker, job.attempt) == ("running", "first", 1)
    assert job.started_at is not None and job.lease_expires_at is not None
    assert [event.data for event in status_events(sessions, job_id)] == [
        {"status": "running", "worker": "first", "attempt": 1}
    ]


def test_a_fresh_lease_is_never_taken_not_even_by_the_same_hostname(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    # Two live workers of one name (two containers both called celery@worker) are two workers.
    job_id = add_job(sessions, settings)
    claim(sessions, job_id, worker="celery@worker")
    assert try_claim(sessions, job_id, worker="celery@worker") is None
    assert try_claim(sessions, job_id, worker="celery@other") is None
    assert job_row(sessions, job_id).attempt == 1


def test_an_expired_lease_is_claimed_by_any_worker_with_the_next_attempt_number(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    claim(sessions, job_id, worker="celery@dead")
    expire_lease(sessions, job_id)

    second = claim(sessions, job_id, worker="celery@alive")

    assert second.number == 2
    job = job_row(sessions, job_id)
    assert (job.status, job.worker, job.attempt) == ("running", "celery@alive", 2)
    assert status_events(sessions, job_id)[-1].message == (
        "claimed by worker celery@alive (attempt 2); the lease of attempt 1 (worker celery@dead) had expired"
    )
    assert try_claim(sessions, job_id, worker="celery@third") is None  # the new lease is fresh


def test_an_expired_lease_of_a_job_asked_to_cancel_is_left_to_the_sweep(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    claim(sessions, job_id)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    expire_lease(sessions, job_id)
    assert try_claim(sessions, job_id) is None


def race(sessions: sessionmaker[Session], job_id: str, deliveries: int) -> list[tuple[str, int]]:
    """`deliveries` threads, each with its own connection, claim the job at once; returns the winners."""
    start = threading.Barrier(deliveries)
    wins: list[tuple[str, int]] = []

    def deliver(name: str) -> None:
        start.wait()
        attempt = try_claim(sessions, job_id, worker=name)
        if attempt is not None:
            wins.append((name, attempt.number))

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
        assert wins[0][1] == 1
        assert job_row(sessions, job_id).worker == wins[0][0]
        assert len(status_events(sessions, job_id)) == 1
        # The same race for an expired lease: one new attempt, numbered 2.
        expire_lease(sessions, job_id)
        wins = race(sessions, job_id, deliveries=6)
        assert [number for _, number in wins] == [2], wins
        assert job_row(sessions, job_id).attempt == 2
        assert len(status_events(sessions, job_id)) == 2


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
    # only the WHERE (status and attempt as read) re-checked after a row lock makes the others lose.
    assert_one_winner_each(postgres_sessions, settings, jobs=10)


def test_a_cancelled_job_is_not_claimed(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="cancelled"))

    assert try_claim(sessions, job_id, worker="late") is None
    assert job_row(sessions, job_id).status == "cancelled"
    assert status_events(sessions, job_id) == []


def test_an_unknown_job_is_not_claimed(sessions: sessionmaker[Session]) -> None:
    assert try_claim(sessions, "ftjob-does-not-exist", worker="w") is None
