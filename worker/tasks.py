"""The Celery tasks (`deltatune.run_job`, `deltatune.score_transferability`) and the worker start-up
hook; glue only.

No state at import time: each task builds its own engine from settings and disposes of it, so a
forked pool process never shares a database connection with its parent.
"""

import logging
from typing import Any

from celery import Task
from celery.signals import worker_ready

from core.db import sessions_for
from core.dispatch import RUN_JOB_TASK, SCORE_TRANSFERABILITY_TASK
from core.settings import get_settings
from worker import job_runner, transferability
from worker.app import celery_app
from worker.lifecycle import JOBS, RUNS

logger = logging.getLogger(__name__)


@celery_app.task(name=RUN_JOB_TASK, bind=True)
def run_job(self: Task, job_id: str) -> str | None:
    """Run job `job_id` unless another delivery (or a cancel) got there first."""
    with sessions_for(get_settings()) as sessions:
        return job_runner.run_job(job_id, settings=get_settings(), sessions=sessions, worker=_worker(self))


@celery_app.task(name=SCORE_TRANSFERABILITY_TASK, bind=True)
def score_transferability(self: Task, run_id: str) -> str | None:
    """Score run `run_id` unless another delivery got there first."""
    with sessions_for(get_settings()) as sessions:
        return transferability.score_run(
            run_id, settings=get_settings(), sessions=sessions, worker=_worker(self)
        )


@worker_ready.connect
def requeue_on_start(sender: Any = None, **_: Any) -> None:
    """Give every job and run that lost its message a new one (see worker.lifecycle)."""
    celery = getattr(sender, "app", None) or celery_app
    hostname = getattr(sender, "hostname", None)
    for lifecycle in (JOBS, RUNS):
        try:
            with sessions_for(get_settings()) as sessions:
                lifecycle.requeue(sessions, celery, worker=hostname)
        except Exception:
            # A worker that cannot reach the database will fail its jobs visibly; it must still start.
            logger.exception("could not re-send queued %ss at worker start", lifecycle.noun)


def _worker(task: Task) -> str:
    return task.request.hostname or "unknown-worker"
