"""Every training event becomes a job event at once, and the job carries the latest progress."""

import math
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.dispatch import make_celery
from core.models import JobEvent
from core.settings import Settings
from tests.worker.jobs import add_job, claim, expire_lease, job_row
from tuning.events import Event
from worker.lifecycle import JOBS, LostLease, aware
from worker.progress import ProgressRecorder


def events_of(sessions: sessionmaker[Session], job_id: str) -> list[JobEvent]:
    """The training's events (not the claim's status event)."""
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type != "status")
    with sessions() as session:
        return list(session.scalars(query.order_by(JobEvent.id)))


def test_events_are_stored_and_the_job_shows_progress(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    record = ProgressRecorder(claim(sessions, job_id))

    record(Event("message", "loading", {"device": "cpu"}))
    record(Event("eval", "step 0", {"step": 0, "epoch": 0.0, "val_loss": 0.7, "val_accuracy": 0.5}))
    record(Event("metrics", "step 3/12", {"step": 3, "total_steps": 12, "epoch": 0.25, "train_loss": 0.6}))
    # Seen in the same instant by another session: each event is committed on its own.
    assert [event.type for event in events_of(sessions, job_id)] == ["message", "eval", "metrics"]
    assert job_row(sessions, job_id).progress == 0.25

    record(Event("eval", "step 6", {"step": 6, "epoch": 0.5, "val_loss": 0.4, "val_accuracy": 0.9}))
    job = job_row(sessions, job_id)
    assert job.progress == 0.5  # eval events carry no total: the last one seen is used
    assert job.metrics == {"step": 6, "epoch": 0.5, "train_loss": 0.6, "val_loss": 0.4, "val_accuracy": 0.9}
    assert events_of(sessions, job_id)[0].data == {"device": "cpu"}


def test_counters_are_taken_when_an_event_gives_them(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    ProgressRecorder(claim(sessions, job_id))(
        Event(
            "metrics", "step 2/4", {"step": 2, "total_steps": 4, "examples_seen": 16, "trained_tokens": 160}
        )
    )
    job = job_row(sessions, job_id)
    assert (job.examples_seen, job.trained_tokens) == (16, 160)


def test_a_diverged_loss_is_stored_as_null(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    ProgressRecorder(claim(sessions, job_id))(
        Event("metrics", "step 1/4", {"step": 1, "total_steps": 4, "train_loss": math.nan, "lr": [math.inf]})
    )
    assert events_of(sessions, job_id)[0].data == {
        "step": 1,
        "total_steps": 4,
        "train_loss": None,
        "lr": [None],
    }
    assert job_row(sessions, job_id).metrics["train_loss"] is None


def test_a_stale_attempt_stores_no_event(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    stale = ProgressRecorder(claim(sessions, job_id))
    expire_lease(sessions, job_id)
    claim(sessions, job_id)
    before = [event.id for event in events_of(sessions, job_id)]
    with pytest.raises(LostLease):
        stale(Event("metrics", "step 3/12", {"step": 3, "total_steps": 12, "train_loss": 0.6}))
    assert [event.id for event in events_of(sessions, job_id)] == before
    assert job_row(sessions, job_id).progress == 0.0


def test_a_resumed_attempt_replaces_the_steps_its_predecessor_trained_past_the_point(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    first = ProgressRecorder(claim(sessions, job_id))
    for step in (2, 4, 6):
        first(Event("metrics", f"step {step}/8", {"step": step, "total_steps": 8, "train_loss": 1.0 / step}))
    first(Event("eval", "step 4", {"step": 4, "val_loss": 0.5}))
    expire_lease(sessions, job_id)
    second = ProgressRecorder(claim(sessions, job_id))
    second(Event("message", "resumed from step 4", {"resumed_from_step": 4, "epoch": 0.5}))
    second(Event("metrics", "step 6/8", {"step": 6, "total_steps": 8, "train_loss": 0.2}))

    steps = [(e.type, e.data["step"]) for e in events_of(sessions, job_id) if "step" in e.data]
    assert steps == [("metrics", 2), ("metrics", 4), ("eval", 4), ("metrics", 6)]
    assert [e.message for e in events_of(sessions, job_id) if e.type == "message"] == ["resumed from step 4"]


def test_a_logging_step_sets_the_counters_and_an_estimated_finish(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    record = ProgressRecorder(claim(sessions, job_id))
    record(Event("message", "loading", {}))
    assert job_row(sessions, job_id).estimated_finish_at is None  # no rate yet

    before = datetime.now(UTC)
    data = {"step": 4, "total_steps": 12, "elapsed_seconds": 10.0, "examples_seen": 32, "trained_tokens": 400}
    record(Event("metrics", "step 4/12", data))
    job = job_row(sessions, job_id)
    assert (job.examples_seen, job.trained_tokens, job.progress) == (32, 400, 4 / 12)
    # 8 steps left at 2.5 s a step.
    left = (aware(job.estimated_finish_at) - before).total_seconds()  # type: ignore[arg-type]
    assert 20.0 <= left < 21.0
    assert "examples_seen" not in job.metrics and "trained_tokens" not in job.metrics  # columns, not metrics


def test_a_job_queued_again_forgets_its_estimate(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    ProgressRecorder(claim(sessions, job_id))(
        Event("metrics", "step 1/4", {"step": 1, "total_steps": 4, "elapsed_seconds": 1.0})
    )
    assert job_row(sessions, job_id).estimated_finish_at is not None
    expire_lease(sessions, job_id)
    JOBS.requeue_expired(sessions, make_celery(settings))
    assert job_row(sessions, job_id).estimated_finish_at is None
