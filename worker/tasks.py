"""The Celery task `deltatune.run_job` and the worker start-up hook; glue only.

No state at import time: each task builds its own engine from settings and disposes of it, so a
forked pool process never shares a database connection with its parent.
"""

import logging
from typing import Any

from celery import Task
from celery.signals import worker_ready

from core.db import sessions_for
from core.dispatch import RUN_JOB_TASK
from core.settings import get_settings
from worker import job_runner
from worker.app import celery_app
from worker.requeue import requeue_orphans, resend_queued

logger = logging.getLogger(__name__)


@celery_app.task(name=RUN_JOB_TASK, bind=True)
def run_job(self: Task, job_id: str) -> str | None:
    """Run job `job_id` unless another delivery (or a cancel) got there first."""
    worker = self.request.hostname or "unknown-worker"
    with sessions_for(get_settings()) as sessions:
        return job_runner.run_job(job_id, settings=get_settings(), sessions=sessions, worker=worker)


@worker_ready.connect
def requeue_on_start(sender: Any = None, **_: Any) -> None:
    """Give every job that lost its message a new one (see worker.requeue)."""
    hostname = getattr(sender, "hostname", None)
    try:
        with sessions_for(get_settings()) as sessions:
            if hostname:
                requeue_orphans(sessions, worker=hostname)
            resend_queued(sessions, getattr(sender, "app", None) or celery_app)
    except Exception:
        # A worker that cannot reach the database will fail its jobs visibly; it must still start.
        logger.exception("could not re-send queued jobs at worker start")
