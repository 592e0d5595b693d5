"""The Celery app routes a job to the one queue it is sent to, on the broker a worker declares."""

from collections import Counter

import pytest

from core.dispatch import QUEUES, enqueue_job, make_celery, prepare_broker
from core.settings import Settings
from worker.app import celery_app


@pytest.mark.parametrize("queue", QUEUES)
def test_a_job_lands_only_in_the_queue_it_was_sent_to(settings: Settings, queue: str) -> None:
    app = make_celery(settings)
    prepare_broker(app)  # as a worker does when it starts
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for declared in app.amqp.queues.values():  # what a worker consuming every queue binds
            declared(channel).declare()

    enqueue_job(app, "ftjob-routing", queue)

    files = (settings.broker_dir / "queue").iterdir()
    assert Counter(path.name.split(".")[-2] for path in files) == {queue: 1}


def test_the_worker_registers_run_job_from_the_app_module() -> None:
    # `celery -A worker.app worker` imports only worker.app: it must pull the task module in.
    assert "worker.tasks" in celery_app.conf.include
