"""The heartbeat renews the attempt's lease and reads the cancel flag in one round trip; it stops the
training loop when a client cancels, when the attempt lost its job, or when the database stays away."""

import time

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.models import Job
from core.settings import Settings
from tests.worker.jobs import add_job, claim, expire_lease, job_row
from worker.heartbeat import Heartbeat, StopReason
from worker.lifecycle import Attempt


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def request_cancel(sessions: sessionmaker[Session], job_id: str) -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))


def test_a_beat_renews_the_lease(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    attempt = claim(sessions, job_id, lease_seconds=30)
    before = job_row(sessions, job_id).lease_expires_at
    time.sleep(0.01)
    heartbeat = Heartbeat(attempt, every_seconds=1.0)
    heartbeat.beat()
    after = job_row(sessions, job_id).lease_expires_at
    assert before is not None and after is not None and after > before
    assert heartbeat.should_stop() is False


def test_a_cancel_written_to_the_database_stops_the_job(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    heartbeat = Heartbeat(claim(sessions, job_id), every_seconds=1.0)
    heartbeat.beat()
    assert heartbeat.should_stop() is False
    request_cancel(sessions, job_id)
    heartbeat.beat()
    assert heartbeat.should_stop() is True and heartbeat.reason is StopReason.CANCEL_REQUESTED


def test_losing_the_lease_stops_the_job(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    heartbeat = Heartbeat(claim(sessions, job_id, worker="frozen"), every_seconds=1.0)
    expire_lease(sessions, job_id)
    claim(sessions, job_id, worker="alive")
    heartbeat.beat()
    assert heartbeat.should_stop() is True and heartbeat.lost
    assert job_row(sessions, job_id).worker == "alive"


def test_the_thread_beats_every_interval(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    with Heartbeat(claim(sessions, job_id), every_seconds=0.05) as heartbeat:
        request_cancel(sessions, job_id)
        deadline = time.monotonic() + 5
        while not heartbeat.should_stop() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert heartbeat.reason is StopReason.CANCEL_REQUESTED


def unavailable() -> sa_exc.OperationalError:
    return sa_exc.OperationalError(
        "SELECT 1", {}, Exception("connection refused"), connection_invalidated=True
    )


def test_a_short_outage_is_ridden_out_and_a_long_one_stops_the_job(
    sessions: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = add_job(sessions, settings)
    attempt = claim(sessions, job_id)  # outage_seconds=5
    clock = FakeClock()
    heartbeat = Heartbeat(attempt, every_seconds=1.0, clock=clock)
    real_renew = Attempt.renew

    def refused(self: Attempt) -> bool:
        raise unavailable()

    monkeypatch.setattr(Attempt, "renew", refused)
    clock.now += 4
    heartbeat.beat()
    assert heartbeat.should_stop() is False  # 4 s without the database: still within the bound
    monkeypatch.setattr(Attempt, "renew", real_renew)
    heartbeat.beat()
    monkeypatch.setattr(Attempt, "renew", refused)
    clock.now += 4.9
    heartbeat.beat()
    assert heartbeat.should_stop() is False  # counted from the last renewal, not the first failure
    clock.now += 0.2
    heartbeat.beat()
    assert heartbeat.reason is StopReason.DATABASE_OUTAGE
