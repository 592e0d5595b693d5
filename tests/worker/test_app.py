"""The Celery app routes a job to the one queue it is sent to, and a worker registers every task."""

import json
import subprocess
import sys
from collections import Counter

import pytest

from core.dispatch import (
    QUEUES,
    RUN_JOB_TASK,
    SCORE_TRANSFERABILITY_TASK,
    enqueue_job,
    make_celery,
    prepare_broker,
)
from core.settings import Settings
from tests.worker.processes import ROOT, clean_environment


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


# What `celery -A worker.app worker` does before it consumes: import worker.app, then the modules the
# app names. A fresh interpreter, so no earlier test's import of worker.tasks can stand in for it.
REGISTERED_TASKS = """
import json
from worker.app import celery_app
celery_app.loader.import_default_modules()
print(json.dumps(sorted(name for name in celery_app.tasks if not name.startswith("celery."))))
"""


def test_the_worker_registers_every_task_the_api_sends() -> None:
    done = subprocess.run(
        [sys.executable, "-c", REGISTERED_TASKS],
        cwd=ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == sorted([RUN_JOB_TASK, SCORE_TRANSFERABILITY_TASK])
