"""The Celery task `deltatune.score_transferability`: claim a run, score its candidates, record the outcome.

Like run_job, the task takes only an id and re-reads everything, so a repeated delivery is harmless
(the claim, queued → running in one conditional UPDATE, has one winner), and every claimed run ends
`succeeded` or `failed` with a message, whatever goes wrong.
"""

import logging
from typing import Any

from celery import Celery, Task
from celery.signals import worker_ready
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import sessions_for
from core.dispatch import SCORE_TRANSFERABILITY_TASK, enqueue_transferability
from core.models import JobStatus, TransferabilityRun, utcnow
from core.settings import Settings, get_settings
from tuning.errors import TuningError
from tuning.models import resolve_base_model
from tuning.spec.transferability import TransferabilityRequest
from tuning.transferability import Candidate, read_scoring_data, score_candidates
from worker.app import celery_app
from worker.outcome import INTERNAL_ERROR, JobFailure

logger = logging.getLogger(__name__)


@celery_app.task(name=SCORE_TRANSFERABILITY_TASK, bind=True)
def score_transferability(self: Task, run_id: str) -> str | None:
    """Score run `run_id` unless another delivery got there first."""
    worker = self.request.hostname or "unknown-worker"
    with sessions_for(get_settings()) as sessions:
        return score_run(run_id, settings=get_settings(), sessions=sessions, worker=worker)


def score_run(run_id: str, *, settings: Settings, sessions: sessionmaker[Session], worker: str) -> str | None:
    """Run it if this delivery claims it; returns the final status, or None when not claimed."""
    if not claim_run(sessions, run_id, worker=worker):
        logger.info("transferability run %s was not queued (already claimed or unknown)", run_id)
        return None
    try:
        results = _score(sessions, run_id, settings)
    except (TuningError, JobFailure) as error:
        _finish(sessions, run_id, JobStatus.FAILED, error_code=error.code, error_message=error.message)
        return JobStatus.FAILED
    except Exception as error:
        logger.exception("transferability run %s hit an unexpected error", run_id)
        message = f"the worker hit an unexpected error: {type(error).__name__}: {error}"
        _finish(sessions, run_id, JobStatus.FAILED, error_code=INTERNAL_ERROR, error_message=message)
        return JobStatus.FAILED
    _finish(sessions, run_id, JobStatus.SUCCEEDED, results=results)
    return JobStatus.SUCCEEDED


def claim_run(sessions: sessionmaker[Session], run_id: str, *, worker: str) -> bool:
    with sessions.begin() as session:
        claimed = session.execute(
            update(TransferabilityRun)
            .where(TransferabilityRun.id == run_id, TransferabilityRun.status == JobStatus.QUEUED)
            .values(status=JobStatus.RUNNING, started_at=utcnow(), worker=worker)
            .execution_options(synchronize_session=False)
        )
        return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def _score(sessions: sessionmaker[Session], run_id: str, settings: Settings) -> list[dict[str, Any]]:
    request = _load_request(sessions, run_id)
    path = settings.files_dir / request.training_file
    if not path.is_file():
        raise JobFailure("file_not_found", f"file {request.training_file} is missing from the file store")
    texts, labels = read_scoring_data(path, request.task, max_examples=request.max_examples)
    candidates = [
        Candidate(name, resolve_base_model(name, settings.model_dirs)) for name in request.base_models
    ]
    return score_candidates(texts, labels, candidates, request.task)


def _load_request(sessions: sessionmaker[Session], run_id: str) -> TransferabilityRequest:
    with sessions() as session:
        run = session.get(TransferabilityRun, run_id)
        stored = run.request if run is not None else None
    if stored is None:
        raise JobFailure(INTERNAL_ERROR, f"transferability run {run_id} disappeared after it was claimed")
    return TransferabilityRequest.model_validate(stored)


def _finish(sessions: sessionmaker[Session], run_id: str, status: str, **values: Any) -> None:
    with sessions.begin() as session:
        session.execute(
            update(TransferabilityRun)
            .where(TransferabilityRun.id == run_id, TransferabilityRun.status == JobStatus.RUNNING)
            .values(status=status, finished_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
    logger.info("transferability run %s %s", run_id, status)


def requeue_runs(sessions: sessionmaker[Session], celery: Celery, *, worker: str | None) -> list[str]:
    """This worker's orphaned runs back to queued, then every queued run sent again (see worker.requeue)."""
    with sessions.begin() as session:
        if worker:
            session.execute(
                update(TransferabilityRun)
                .where(TransferabilityRun.status == JobStatus.RUNNING, TransferabilityRun.worker == worker)
                .values(status=JobStatus.QUEUED, worker=None, started_at=None)
                .execution_options(synchronize_session=False)
            )
        waiting = select(TransferabilityRun.id, TransferabilityRun.queue).where(
            TransferabilityRun.status == JobStatus.QUEUED
        )
        queued = list(session.execute(waiting.order_by(TransferabilityRun.created_at)))
    for run_id, queue in queued:
        enqueue_transferability(celery, run_id, queue)
    return [run_id for run_id, _ in queued]


@worker_ready.connect
def requeue_runs_on_start(sender: Any = None, **_: Any) -> None:
    try:
        with sessions_for(get_settings()) as sessions:
            requeue_runs(
                sessions, getattr(sender, "app", None) or celery_app, worker=getattr(sender, "hostname", None)
            )
    except Exception:
        # A worker that cannot reach the database must still start (as for jobs).
        logger.exception("could not re-send queued transferability runs at worker start")
