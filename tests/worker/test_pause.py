"""Pause on the worker: a pause asked of a running job is read at a heartbeat, a resume point is kept
at the next step boundary, the lease is released and the job is `paused`; the sweep leaves it alone;
resumed (queued again), the next claim goes on from that point and ends with the same weights as the
job never paused. A cancel asked meanwhile wins over the pause.
"""

import time

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.dispatch import make_celery
from core.models import Job
from core.settings import Settings
from tests.worker.jobs import add_job, job_row
from tests.worker.test_resume import messages, step_events, weights
from tuning.events import Event
from worker import job_runner
from worker.job_runner import run_job
from worker.progress import ProgressRecorder
from worker.sweep import sweep

PAUSE_AT = 3  # inside the first epoch (4 steps an epoch)
HYPERPARAMETERS = {"epochs": 2, "logging_steps": 1}


def ask(sessions: sessionmaker[Session], job_id: str, **flags: bool | str) -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**flags))


def asks_at_step(sessions: sessionmaker[Session], **flags: bool) -> type[ProgressRecorder]:
    """A recorder that, at step PAUSE_AT's metrics event, asks as a client would and waits long enough
    for several heartbeats (every 0.05 s) to have read it, so the step boundary that follows sees it."""

    class Asks(ProgressRecorder):
        def __call__(self, event: Event) -> None:
            super().__call__(event)
            if event.type == "metrics" and event.data["step"] == PAUSE_AT:
                ask(sessions, self._job_id, **flags)
                time.sleep(1.0)

    return Asks


@pytest.fixture()
def pausing(settings: Settings) -> Settings:
    # No resume points on a schedule: the only one is the pause's.
    return settings.model_copy(update={"resume_every_steps": None, "resume_every_seconds": None})


def test_a_paused_job_resumes_at_its_point_and_ends_as_if_never_paused(
    pausing: Settings, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pausing
    whole = add_job(sessions, settings, **HYPERPARAMETERS)
    assert run_job(whole, settings=settings, sessions=sessions, worker="w") == "succeeded"

    job_id = add_job(sessions, settings, **HYPERPARAMETERS)
    with monkeypatch.context() as patch:
        patch.setattr(job_runner, "ProgressRecorder", asks_at_step(sessions, pause_requested=True))
        assert run_job(job_id, settings=settings, sessions=sessions, worker="w") == "paused"
    job = job_row(sessions, job_id)
    assert (job.status, job.lease_expires_at, job.pause_requested, job.finished_at) == (
        "paused",
        None,
        False,
        None,
    )
    assert sorted(p.name for p in (settings.resume_dir / job_id).iterdir()) == [f"step-{PAUSE_AT:08d}"]
    assert f"paused at step {PAUSE_AT}; resume it to go on from there" in messages(sessions, job_id)

    # The sweep neither re-sends nor expires it, and keeps its resume point.
    report = sweep(settings, make_celery(settings), at_start=True)
    assert job_id not in report.requeued + report.resent
    assert (settings.resume_dir / job_id).is_dir() and job_row(sessions, job_id).status == "paused"
    assert (
        run_job(job_id, settings=settings, sessions=sessions, worker="w") is None
    )  # a paused job is not claimed

    ask(sessions, job_id, status="queued")  # as the API's resume does
    assert run_job(job_id, settings=settings, sessions=sessions, worker="w") == "succeeded"
    job = job_row(sessions, job_id)
    assert (job.status, job.attempt) == ("succeeded", 2)
    ours, theirs = weights(sessions, settings, job_id), weights(sessions, settings, whole)
    assert ours.keys() == theirs.keys() and ours
    for name, tensor in ours.items():
        assert (tensor - theirs[name]).abs().max().item() == 0.0, name
    assert step_events(sessions, job_id) == step_events(sessions, whole)
    assert f"resumed from step {PAUSE_AT}" in messages(sessions, job_id)
    assert not (settings.resume_dir / job_id).exists()


def test_a_cancel_asked_with_the_pause_wins(
    pausing: Settings, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = add_job(sessions, pausing, **HYPERPARAMETERS)
    monkeypatch.setattr(
        job_runner, "ProgressRecorder", asks_at_step(sessions, pause_requested=True, cancel_requested=True)
    )
    assert run_job(job_id, settings=pausing, sessions=sessions, worker="w") == "cancelled"
    assert job_row(sessions, job_id).status == "cancelled"
    assert not (pausing.resume_dir / job_id).exists()
