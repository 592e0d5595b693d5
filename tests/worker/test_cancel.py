"""should_stop reads the job's cancel flag from the database, at most once per poll interval."""

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.models import Job
from core.settings import Settings
from tests.worker.jobs import add_job
from worker.lifecycle import CancelPoller


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def request_cancel(sessions: sessionmaker[Session], job_id: str) -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))


def test_should_stop_sees_a_cancel_written_to_the_database(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    clock = FakeClock()
    should_stop = CancelPoller(sessions, job_id, every_seconds=1.0, clock=clock)
    assert should_stop() is False

    request_cancel(sessions, job_id)
    clock.now += 1.0

    assert should_stop() is True


def test_should_stop_polls_at_most_once_per_interval(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    clock = FakeClock()
    should_stop = CancelPoller(sessions, job_id, every_seconds=1.0, clock=clock)
    assert should_stop() is False

    request_cancel(sessions, job_id)
    clock.now += 0.5
    assert should_stop() is False  # the flag is set, but it is too soon to read it again
    clock.now += 0.5
    assert should_stop() is True


def test_a_seen_cancel_stays_seen(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    request_cancel(sessions, job_id)
    should_stop = CancelPoller(sessions, job_id, every_seconds=1.0, clock=FakeClock())
    assert should_stop() is True
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=False))
    assert should_stop() is True
