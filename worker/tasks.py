"""The Celery tasks (`deltatune.run_job`, `deltatune.score_transferability`) and the worker's start and
shutdown hooks, which publish this machine's figures (worker.machine_figures) and run the sweep
(worker.sweep) and the webhook sender (worker.webhook_sender); glue only.

No state at import time: each task builds its own engine from settings and disposes of it, so a
forked pool process never shares a database connection with its parent.
"""

import logging
from typing import Any

from celery import Task
from celery.signals import worker_ready, worker_shutdown

from core.db import sessions_for
from core.dispatch import RUN_JOB_TASK, SCORE_TRANSFERABILITY_TASK
from core.settings import get_settings
from worker import job_runner, transferability
from worker.app import celery_app
from worker.machine_figures import publication_at_start
from worker.sweep import Sweeper
from worker.webhook_sender import WebhookSender

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


_sweepers: list[Sweeper] = []
_webhook_senders: list[WebhookSender] = []


@worker_ready.connect
def start_sweeping(sender: Any = None, **_: Any) -> None:
    """Publish this machine's figures (measured now, before any job runs, unless kept from an earlier
    start) and sweep once, both before the worker says it is ready (the sweep replaces the re-send at
    start); then sweep and mark the figures seen every sweep_seconds in a thread of this process (see
    worker.sweep)."""
    settings = get_settings()
    publication = publication_at_start(settings, hostname=_hostname(sender), queues=_queues(sender))
    sweeper = Sweeper(settings, also=publication.refresh if publication is not None else None)
    sweeper.sweep_once(at_start=True)
    _sweepers.append(sweeper.start())


@worker_ready.connect
def start_sending_webhooks(sender: Any = None, **_: Any) -> None:
    _webhook_senders.append(WebhookSender(get_settings()).start())


@worker_shutdown.connect
def stop_sweeping(**_: Any) -> None:
    while _sweepers:
        _sweepers.pop().stop()
    while _webhook_senders:
        _webhook_senders.pop().stop()


def _hostname(consumer: Any) -> str:
    return getattr(consumer, "hostname", None) or "unknown-worker"


def _queues(consumer: Any) -> list[str]:
    """The queues this worker consumes (`--queues`), whose dry runs its figures describe."""
    app = getattr(consumer, "app", None) or celery_app
    return sorted(app.amqp.queues.consume_from)


def _worker(task: Task) -> str:
    return task.request.hostname or "unknown-worker"
