"""Redis restarts without persistence while a job waits in its queue: the message is gone, the job's
row is not. The sweep sends a job that stayed queued too long again, so it runs without anyone
restarting a worker (before: it waited until some worker started)."""

import pytest

from tests.faults.conftest import DeployFactory
from tests.faults.outcomes import assert_came_through, claimed_by

pytestmark = pytest.mark.integration


@pytest.mark.timeout(150)
def test_a_job_whose_queued_message_died_with_the_broker_is_sent_again_and_runs(
    deployment: DeployFactory,
) -> None:
    d = deployment(workers=("w1",))  # concurrency 1: the second job waits in Redis
    first = d.submit(d.slow_job())
    d.wait_for(first, lambda _: d.last_step(first) >= 2, timeout=90)
    second = d.submit(d.quick_job())
    assert d.queue_length() == 1, "the second job's message is not waiting in Redis"
    worker_pid = d.workers["w1"].pid

    d.redis.stop()
    d.redis.start()
    assert d.queue_length() == 0  # no persistence: the message is lost

    d.wait_for(first, "succeeded", timeout=90)
    d.wait_for(second, "succeeded", timeout=60)
    assert d.workers["w1"].running() and d.workers["w1"].pid == worker_pid  # the same worker process
    assert len(d.workers) == 1
    assert claimed_by(d, first) == claimed_by(d, second) == ["w1@faults"]
    assert_came_through(d, first)
    assert_came_through(d, second)
