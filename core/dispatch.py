"""Dispatch: how committed work reaches a worker, by task name over the broker both sides share.

The API builds a Celery app to send, the worker one to consume, both with `make_celery(settings)`.
Building one touches nothing: kombu's filesystem broker gets its folders only when something
sends (`enqueue_*`) or starts to serve (`prepare_broker`: the API's and the worker's start), so
importing the API or the worker creates nothing on disk.
"""

from collections.abc import Sequence
from pathlib import Path

from celery import Celery
from kombu import Queue

from core.settings import Settings

RUN_JOB_TASK = "deltatune.run_job"
SCORE_TRANSFERABILITY_TASK = "deltatune.score_transferability"
QUEUES = ("gpu", "cpu")

# kombu's filesystem transport options that name a folder it reads or writes.
_FOLDER_OPTIONS = ("data_folder_in", "data_folder_out", "processed_folder", "control_folder")


def make_celery(settings: Settings, *, include: Sequence[str] = ()) -> Celery:
    """The Celery app for `settings`; `include`: the task modules a worker registers (senders need none)."""
    app = Celery("deltatune", broker=settings.broker_url, include=list(include))
    app.conf.update(
        task_acks_late=True,  # a worker killed mid-job leaves the message for another worker
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # long tasks: never hold a second job hostage
        task_ignore_result=True,  # outcomes live in the jobs table, not a result backend
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=settings.job_queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if settings.uses_filesystem_broker:
        app.conf.broker_transport_options = _filesystem_transport_options(settings)
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacked message after this long; a job may train for hours.
        app.conf.broker_transport_options = {"visibility_timeout": 12 * 3600}
    return app


def _filesystem_transport_options(settings: Settings) -> dict[str, str | bool]:
    # One folder of message files that producer and consumer share; without `control_folder`,
    # kombu keeps its exchange-to-queue bindings in a `control` folder of the current directory.
    queue_dir = settings.broker_dir / "queue"
    return {
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "processed_folder": str(settings.broker_dir / "processed"),
        "control_folder": str(settings.broker_dir / "control"),
        "store_processed": False,
    }


def prepare_broker(celery: Celery) -> None:
    """Create the filesystem broker's folders (kombu does not); nothing to do for a broker server."""
    options = celery.conf.broker_transport_options or {}
    for name in _FOLDER_OPTIONS:
        if name in options:
            Path(options[name]).mkdir(parents=True, exist_ok=True)


def enqueue_job(celery: Celery, job_id: str, queue: str) -> None:
    """Send run_job; only after the job's row is committed, so the worker finds it."""
    _send(celery, RUN_JOB_TASK, job_id, queue)


def enqueue_transferability(celery: Celery, run_id: str, queue: str) -> None:
    _send(celery, SCORE_TRANSFERABILITY_TASK, run_id, queue)


def _send(celery: Celery, task: str, row_id: str, queue: str) -> None:
    prepare_broker(celery)
    # By name, so the API process never imports the worker's torch-heavy task modules.
    celery.send_task(task, args=[row_id], queue=queue)
