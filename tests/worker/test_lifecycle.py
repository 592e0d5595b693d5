"""One lifecycle for jobs and transferability runs: one winner per claim, one end, only from running."""

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.models import File, JobEvent, TransferabilityRun
from core.settings import Settings
from tests.worker.jobs import add_file, add_job, sentiment_lines
from worker.lifecycle import INTERNAL_ERROR, JOBS, RUNS, JobFailure, Lifecycle

LIFECYCLES = pytest.mark.parametrize("lifecycle", [JOBS, RUNS], ids=["jobs", "runs"])


def add_row(lifecycle: Lifecycle, sessions: sessionmaker[Session], settings: Settings) -> str:
    """A queued job, or a queued transferability run, as the API leaves them."""
    if lifecycle is JOBS:
        return add_job(sessions, settings)
    training = add_file(sessions, settings, sentiment_lines(4, seed=1), purpose="fine-tune")
    with sessions.begin() as session:
        owner_id = session.scalar(select(File.owner_id).where(File.id == training))
        request = {"training_file": training, "base_models": ["tiny-bert"]}
        run = TransferabilityRun(owner_id=owner_id, status="queued", request=request, queue="cpu")
        session.add(run)
        session.flush()
        return run.id


def row(lifecycle: Lifecycle, sessions: sessionmaker[Session], row_id: str) -> dict[str, object]:
    with sessions() as session:
        found = session.get(lifecycle.table, row_id)
        assert found is not None
        return {"status": found.status, "worker": found.worker, "error_code": found.error_code}


def status_events(sessions: sessionmaker[Session], row_id: str) -> list[str]:
    query = select(JobEvent.data).where(JobEvent.job_id == row_id, JobEvent.type == "status")
    with sessions() as session:
        return [data["status"] for data in session.scalars(query.order_by(JobEvent.id))]


@LIFECYCLES
def test_a_claim_has_one_winner(
    lifecycle: Lifecycle, sessions: sessionmaker[Session], settings: Settings
) -> None:
    row_id = add_row(lifecycle, sessions, settings)
    assert lifecycle.claim(sessions, row_id, worker="first")
    assert not lifecycle.claim(sessions, row_id, worker="second")
    assert row(lifecycle, sessions, row_id)["worker"] == "first"


@LIFECYCLES
def test_a_row_ends_once_and_only_from_running(
    lifecycle: Lifecycle, sessions: sessionmaker[Session], settings: Settings
) -> None:
    queued = add_row(lifecycle, sessions, settings)
    lifecycle.fail(sessions, queued, JobFailure("boom", "never claimed"))
    assert row(lifecycle, sessions, queued)["status"] == "queued"

    running = add_row(lifecycle, sessions, settings)
    assert lifecycle.claim(sessions, running, worker="w")
    lifecycle.fail(sessions, running, JobFailure("first_reason", "the first end"))
    lifecycle.cancel(sessions, running)  # too late: the failure was recorded first
    assert row(lifecycle, sessions, running) == {
        "status": "failed",
        "worker": "w",
        "error_code": "first_reason",
    }


def test_only_a_job_ending_leaves_its_status_events(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    assert JOBS.claim(sessions, job_id, worker="w")
    JOBS.cancel(sessions, job_id)
    JOBS.fail(sessions, job_id, JobFailure("late", "after the cancel"))
    assert status_events(sessions, job_id) == ["running", "cancelled"]


@LIFECYCLES
def test_an_unexpected_error_is_recorded_as_the_workers_fault(
    lifecycle: Lifecycle, sessions: sessionmaker[Session], settings: Settings
) -> None:
    row_id = add_row(lifecycle, sessions, settings)
    assert lifecycle.claim(sessions, row_id, worker="w")
    lifecycle.fail(sessions, row_id, KeyError("gone"))
    with sessions() as session:
        found = session.get(lifecycle.table, row_id)
        assert found is not None and found.error_code == INTERNAL_ERROR
        assert found.error_message == "the worker hit an unexpected error: KeyError: 'gone'"


@LIFECYCLES
def test_a_restarted_worker_takes_back_only_its_own_orphans(
    lifecycle: Lifecycle, sessions: sessionmaker[Session], settings: Settings
) -> None:
    mine, theirs = add_row(lifecycle, sessions, settings), add_row(lifecycle, sessions, settings)
    assert lifecycle.claim(sessions, mine, worker="celery@here")
    assert lifecycle.claim(sessions, theirs, worker="celery@elsewhere")

    assert lifecycle.requeue_orphans(sessions, worker="celery@here") == [mine]
    assert row(lifecycle, sessions, mine)["status"] == "queued"
    assert row(lifecycle, sessions, theirs)["status"] == "running"
    with sessions.begin() as session:  # a finished row is never queued again
        session.execute(
            update(lifecycle.table).where(lifecycle.table.id == theirs).values(status="succeeded")
        )
    assert lifecycle.requeue_orphans(sessions, worker="celery@elsewhere") == []
