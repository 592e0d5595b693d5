"""One lifecycle for jobs and transferability runs: one winner per claim, one end, only from running,
and only by the attempt that holds the row: a stale attempt's writes change nothing."""

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.models import File, JobEvent, TransferabilityRun
from core.settings import Settings
from core.storage import StoreUnavailable
from tests.worker.jobs import add_file, add_job, claim, expire_lease, sentiment_lines, try_claim
from worker.lifecycle import INTERNAL_ERROR, JOBS, RUNS, STORAGE_UNAVAILABLE, JobFailure, Lifecycle, LostLease

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
    assert claim(sessions, row_id, worker="first", lifecycle=lifecycle).number == 1
    assert try_claim(sessions, row_id, worker="second", lifecycle=lifecycle) is None
    assert row(lifecycle, sessions, row_id)["worker"] == "first"


@LIFECYCLES
def test_a_row_ends_once_and_only_from_running(
    lifecycle: Lifecycle, sessions: sessionmaker[Session], settings: Settings
) -> None:
    running = add_row(lifecycle, sessions, settings)
    attempt = claim(sessions, running, worker="w", lifecycle=lifecycle)
    attempt.fail(JobFailure("first_reason", "the first end"))
    with pytest.raises(LostLease):
        attempt.cancel()  # too late: the failure was recorded first
    assert row(lifecycle, sessions, running) == {
        "status": "failed",
        "worker": "w",
        "error_code": "first_reason",
    }


@LIFECYCLES
def test_a_stale_attempt_changes_nothing(
    lifecycle: Lifecycle, sessions: sessionmaker[Session], settings: Settings
) -> None:
    row_id = add_row(lifecycle, sessions, settings)
    stale = claim(sessions, row_id, worker="frozen", lifecycle=lifecycle)
    expire_lease(sessions, row_id, lifecycle=lifecycle)
    current = claim(sessions, row_id, worker="alive", lifecycle=lifecycle)

    for write in (
        lambda: stale.fail(JobFailure("stale", "from the attempt that lost the job")),
        stale.succeed,
        stale.cancel,
        stale.renew,
        lambda: stale.write(lambda session: None),
    ):
        with pytest.raises(LostLease):
            write()
    assert row(lifecycle, sessions, row_id) == {"status": "running", "worker": "alive", "error_code": None}

    current.fail(JobFailure("real", "the current attempt's end"))
    assert row(lifecycle, sessions, row_id)["error_code"] == "real"


def test_only_a_job_ending_leaves_its_status_events(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    attempt = claim(sessions, job_id, worker="w")
    attempt.cancel()
    with pytest.raises(LostLease):
        attempt.fail(JobFailure("late", "after the cancel"))
    assert status_events(sessions, job_id) == ["running", "cancelled"]


@LIFECYCLES
def test_an_unexpected_error_is_recorded_as_the_workers_fault(
    lifecycle: Lifecycle, sessions: sessionmaker[Session], settings: Settings
) -> None:
    row_id = add_row(lifecycle, sessions, settings)
    claim(sessions, row_id, worker="w", lifecycle=lifecycle).fail(KeyError("gone"))
    with sessions() as session:
        found = session.get(lifecycle.table, row_id)
        assert found is not None and found.error_code == INTERNAL_ERROR
        assert found.error_message == "the worker hit an unexpected error: KeyError: 'gone'"


def test_a_full_disk_is_recorded_without_any_path(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    full = OSError(28, "No space left on device", str(settings.data_dir / "work" / "optimizer.pt"))
    wrapped = RuntimeError("could not save the resume point")
    wrapped.__cause__ = full  # as `raise ... from` leaves it
    claim(sessions, job_id).fail(wrapped)
    with sessions() as session:
        job = session.get(JOBS.table, job_id)
        assert job is not None and job.error_code == "disk_full"
        assert "/" not in (job.error_message or "")


def test_an_unreachable_object_store_fails_a_job_saying_so_without_its_address() -> None:
    error = StoreUnavailable("the object store is unavailable (storing artifacts/x): http://objects.internal")
    failure = JOBS.failure("ftjob-1", error)
    assert failure.code == STORAGE_UNAVAILABLE
    assert "object store" in failure.message and "objects.internal" not in failure.message
