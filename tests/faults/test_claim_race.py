"""Two idle workers, each with a delivery of the same job (a broker redelivery, a re-send): on
PostgreSQL exactly one attempt claims it, and it trains to success once."""

import pytest

from core.dispatch import RUN_JOB_TASK, enqueue_job, make_celery
from core.settings import Settings
from tests.faults.conftest import DeployFactory
from tests.faults.outcomes import assert_came_through

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_two_workers_with_a_delivery_each_train_the_job_once(deployment: DeployFactory) -> None:
    d = deployment(workers=("w1", "w2"))
    job_id = d.submit(d.quick_job())
    celery = make_celery(Settings(broker_url=d.redis.url, data_dir=d.data_dir))
    enqueue_job(celery, job_id, "cpu")  # the second delivery

    d.wait_for(job_id, "succeeded", timeout=60)
    received = f"Task {RUN_JOB_TASK}["
    d.wait_for(job_id, lambda _: all(received in worker.log() for worker in d.workers.values()), timeout=30)
    assert len(d.claims(job_id)) == 1
    assert d.resumed_from(job_id) == []
    assert_came_through(d, job_id)
