"""A worker dies between its publish and its commit: the artifact folder is in place, its rows and the
`succeeded` status are not. The next attempt resolves it: one artifact set, its files present.

To stop the worker exactly there, the test holds a SHARE lock on the artifacts table: reads go on,
the worker's INSERT of its artifact rows waits. Once the folder is published and the INSERT waits,
the worker is SIGKILLed and the lock released; its transaction never commits (its connection is gone
before its COMMIT is sent). No hook in the product: this is the window a crash really hits.
"""

import hashlib
import time

import psycopg
import pytest

from tests.faults.conftest import DeployFactory
from tests.faults.outcomes import assert_came_through, claimed_by

pytestmark = pytest.mark.integration

WAITING_INSERT = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO artifacts%'
"""


@pytest.mark.timeout(150)
def test_a_worker_killed_after_publishing_before_committing_leaves_one_artifact_set(
    deployment: DeployFactory,
) -> None:
    d = deployment(workers=("w1",))
    job_id = d.submit(d.slow_job())
    d.wait_for(job_id, "running", timeout=60)

    with psycopg.connect(d.database_url) as lock, psycopg.connect(d.database_url, autocommit=True) as probe:
        lock.execute("LOCK TABLE artifacts IN SHARE MODE")
        deadline = time.monotonic() + 90
        while not (d.published(job_id) and probe.execute(WAITING_INSERT).fetchone() == (1,)):
            assert time.monotonic() < deadline, "the worker never reached its commit"
            time.sleep(0.05)
        d.kill_worker("w1")
        (folder,) = d.published(job_id)
        published = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (d.data_dir / folder).iterdir()
        }
        lock.rollback()
    assert d.job(job_id)["status"] == "running" and d.artifact_rows(job_id) == []

    d.start_worker("w2")
    d.wait_for(job_id, "succeeded", timeout=90)
    assert claimed_by(d, job_id) == ["w1@faults", "w2@faults"]
    download = assert_came_through(d, job_id)
    # Resumed exactly, the job ends with the weights the dead attempt published.
    assert download.sha256["adapter_model.safetensors"] == published["adapter_model.safetensors"]
