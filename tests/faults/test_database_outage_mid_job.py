"""The database goes down for about ten seconds while a job trains: the API answers 503 with
Retry-After meanwhile, the worker retries its writes through the outage (up to
DELTATUNE_DATABASE_OUTAGE_SECONDS), and the job succeeds in its one attempt as if nothing happened
(before: the first failed write failed the job, or, the failure not being recordable either, left
it `running`)."""

import time

import httpx
import pytest

from tests.faults.conftest import DeployFactory
from tests.faults.outcomes import assert_came_through
from tests.faults.servers import PostgresServer

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 10.0


@pytest.mark.timeout(150)
def test_a_job_trains_through_a_database_outage_and_the_api_answers_503_meanwhile(
    own_postgres: PostgresServer, deployment: DeployFactory
) -> None:
    d = deployment(workers=("w1",), admin_url=own_postgres.url)
    job_id = d.submit(d.slow_job())
    d.wait_for(job_id, lambda _: d.last_step(job_id) >= 10, timeout=90)

    own_postgres.stop()
    answers: list[tuple[int | str, str | None]] = []
    down_until = time.monotonic() + OUTAGE_SECONDS
    while time.monotonic() < down_until:
        try:
            response = d.client.get(f"/v1/jobs/{job_id}", timeout=15)
            answers.append((response.status_code, response.headers.get("Retry-After")))
        except httpx.HTTPError as error:  # the api must answer, not hang up
            answers.append((type(error).__name__, None))
        time.sleep(0.5)
    own_postgres.start()

    assert answers and all(status == 503 and retry for status, retry in answers), answers
    d.wait_for(job_id, "succeeded", timeout=90)
    # One attempt: every lease looks expired when the database is back, but a sweeper that saw the
    # outage waits a lease period, and the live attempt renews within a heartbeat (worker/sweep.py).
    assert len(d.claims(job_id)) == 1 and d.resumed_from(job_id) == []
    assert_came_through(d, job_id)
