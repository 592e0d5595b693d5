"""The claim: of any number of deliveries racing for one queued job, exactly one runs it."""

import threading

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.models import Job, JobEvent
from core.settings import Settings
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


def test_racing_claims_have_exactly_one_winner(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    start = threading.Barrier(6)
    wins: list[str] = []

    def deliver(name: str) -> None:
        start.wait()
        if JOBS.claim(sessions, job_id, worker=name):
            wins.append(name)

    threads = [threading.Thread(target=deliver, args=(f"worker-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(wins) == 1
    assert job_row(sessions, job_id).worker == wins[0]
    assert len(status_events(sessions, job_id)) == 1


def test_a_cancelled_job_is_not_claimed(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="cancelled"))

    assert JOBS.claim(sessions, job_id, worker="late") is False
    assert job_row(sessions, job_id).status == "cancelled"
    assert status_events(sessions, job_id) == []


def test_an_unknown_job_is_not_claimed(sessions: sessionmaker[Session]) -> None:
    assert JOBS.claim(sessions, "ftjob-does-not-exist", worker="w") is False
