"""The Celery application: broker from settings, long-task settings from Celery's own guide.

Tasks take a job id and re-read everything from the database, so any delivery can be repeated.
"""

from celery import Celery
from kombu import Queue

from service.settings import Settings, get_settings

QUEUES = ("gpu", "cpu")


def _filesystem_transport_options(settings: Settings) -> dict[str, str | bool]:
    # kombu's filesystem transport: one folder of message files that producer and consumer share.
    queue_dir = settings.broker_dir / "queue"
    processed_dir = settings.broker_dir / "processed"
    # Exchange-to-queue bindings; kombu's default is a `control` folder in the current directory.
    control_dir = settings.broker_dir / "control"
    for folder in (queue_dir, processed_dir, control_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "processed_folder": str(processed_dir),
        "control_folder": str(control_dir),
        "store_processed": False,
    }


def make_celery(settings: Settings) -> Celery:
    # `include`: a worker started with `celery -A worker.app` registers its tasks and connects its pool
    # processes' exit hook; senders never import them.
    app = Celery(
        "deltatune",
        broker=settings.broker_url,
        include=["worker.tasks", "worker.transferability", "worker.pool_exit"],
    )
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


celery_app = make_celery(get_settings())
