"""A worker lost mid-job, in each way a worker is lost: the job is taken back once its lease expires
and resumes from its latest resume point, or (a live worker) is left alone.

Issue 10's rows: what happened before leases was a job left `running` for ever (a, b, g), trained
again from step 1 with duplicated events (c), or trained twice at once (d).
"""

import time

import pytest

from tests.faults.conftest import DeployFactory
from tests.faults.harness import FINISHED, LEASE_ENV, SLOW_TOTAL_STEPS, Deployment
from tests.faults.outcomes import assert_came_through, assert_no_leftovers, claimed_by

pytestmark = pytest.mark.integration

KILL_AT_STEP = 10
RESUME_EVERY_STEPS = int(LEASE_ENV["DELTATUNE_RESUME_EVERY_STEPS"])
LEASE_SECONDS = float(LEASE_ENV["DELTATUNE_LEASE_SECONDS"])


def training_past(deployment: Deployment, job_id: str, step: int, *, timeout: float = 90) -> int:
    """Wait until the job's metrics reach `step`; the step seen."""
    deployment.wait_for(job_id, lambda _: deployment.last_step(job_id) >= step, timeout=timeout)
    return deployment.last_step(job_id)


def assert_resumed_after(deployment: Deployment, job_id: str, seen_at_kill: int) -> int:
    """One `resumed from step k` event, k a recent resume point: not step 0, not long before the kill."""
    resumed = deployment.resumed_from(job_id)
    assert len(resumed) == 1, f"expected one resume, got {resumed}"
    (step,) = resumed
    # Events of step s are committed before the point of step s is written, so the latest point at
    # the kill is at most a resume interval behind the step seen (two, for a point still being handed on).
    assert seen_at_kill - 2 * RESUME_EVERY_STEPS <= step <= SLOW_TOTAL_STEPS, (step, seen_at_kill)
    assert step > 0
    return step


def assert_still_running(deployment: Deployment, job_id: str, when: str) -> None:
    status = deployment.job(job_id)["status"]
    assert status not in FINISHED, f"the job ended before {when}, which shows nothing: make it longer"
    assert status == "running", f"the job is {status} after {when}: its running attempt was taken away"


@pytest.mark.timeout(150)
def test_a_worker_killed_with_its_pool_is_replaced_by_another_and_the_job_resumes(
    deployment: DeployFactory,
) -> None:
    d = deployment(workers=("w1",))
    job_id = d.submit(d.slow_job())
    seen = training_past(d, job_id, KILL_AT_STEP)

    killed_at = time.monotonic()
    d.kill_worker("w1")
    d.start_worker("w2")
    ready_at = time.monotonic()
    d.wait_for(job_id, lambda job: job["status"] == "running" and len(d.claims(job_id)) == 2, timeout=60)
    running_at = time.monotonic()
    d.wait_for(job_id, "succeeded", timeout=90)
    succeeded_at = time.monotonic()

    assert claimed_by(d, job_id) == ["w1@faults", "w2@faults"]
    step = assert_resumed_after(d, job_id, seen)
    assert_came_through(d, job_id)
    settings = ", ".join(f"{name}={value}" for name, value in LEASE_ENV.items())
    print(
        f"\nrecovery ({settings}): killed at step {seen}, resumed from step {step}; "
        f"SIGKILL -> w2 ready {ready_at - killed_at:.1f} s, -> running on w2 {running_at - killed_at:.1f} s, "
        f"-> succeeded {succeeded_at - killed_at:.1f} s"
    )


@pytest.mark.timeout(150)
def test_a_pool_process_killed_under_a_live_worker_has_its_job_taken_again(deployment: DeployFactory) -> None:
    d = deployment(workers=("w1",))
    job_id = d.submit(d.slow_job())
    seen = training_past(d, job_id, KILL_AT_STEP)

    killed_at = time.monotonic()
    d.kill_worker("w1", child_only=True)
    assert d.workers["w1"].running()  # Celery's main process lives on, with a new pool process
    d.wait_for(job_id, lambda job: job["status"] == "running" and len(d.claims(job_id)) == 2, timeout=60)
    running_at = time.monotonic()
    d.wait_for(job_id, "succeeded", timeout=90)
    succeeded_at = time.monotonic()

    assert d.workers["w1"].running()
    assert claimed_by(d, job_id) == ["w1@faults", "w1@faults"]
    step = assert_resumed_after(d, job_id, seen)
    assert_came_through(d, job_id)
    print(
        f"\npool process killed at step {seen}, resumed from step {step}: running again "
        f"{running_at - killed_at:.1f} s after the SIGKILL, succeeded {succeeded_at - killed_at:.1f} s after"
    )


@pytest.mark.timeout(150)
def test_a_worker_restarted_under_its_name_resumes_its_job_without_repeating_steps(
    deployment: DeployFactory,
) -> None:
    d = deployment(workers=("w1",))
    job_id = d.submit(d.slow_job())
    seen = training_past(d, job_id, KILL_AT_STEP)

    d.kill_worker("w1")
    d.start_worker("w1")  # same name: w1@faults

    d.wait_for(job_id, "succeeded", timeout=90)
    assert claimed_by(d, job_id) == ["w1@faults", "w1@faults"]
    assert_resumed_after(d, job_id, seen)
    assert_came_through(d, job_id)  # the first attempt's events after step k are not in the series


@pytest.mark.timeout(150)
def test_a_second_live_worker_with_the_same_name_leaves_the_running_job_alone(
    deployment: DeployFactory,
) -> None:
    d = deployment(workers=("w1",))
    # Far longer than the checks below on any machine (an idle one trained 6 epochs before the twin had
    # started and two leases passed); cancelled once they are done.
    job_id = d.submit(d.slow_job(epochs=100))
    training_past(d, job_id, 2)

    d.start_worker("twin", hostname="w1@faults")
    assert_still_running(d, job_id, "the twin's start")
    time.sleep(2 * LEASE_SECONDS)  # several sweeps of both, while w1 heartbeats
    assert_still_running(d, job_id, "two leases after the twin's start")
    assert len(d.claims(job_id)) == 1

    response = d.client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    d.wait_for(job_id, "cancelled", timeout=60)
    assert claimed_by(d, job_id) == ["w1@faults"]
    assert d.resumed_from(job_id) == []
    steps = [int(e["data"]["step"]) for e in d.events(job_id) if e["type"] == "metrics"]
    assert steps == list(range(1, len(steps) + 1))  # w1 trained it throughout: one series, none repeated
    assert_no_leftovers(d)


@pytest.mark.timeout(120)
def test_cancelling_a_job_whose_worker_is_gone_ends_it_cancelled(deployment: DeployFactory) -> None:
    d = deployment(workers=("w1",))
    job_id = d.submit(d.slow_job())
    training_past(d, job_id, 4)
    d.kill_worker("w1")

    response = d.client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["cancel_requested"] is True
    # The sweep runs in workers: another one sees the expired lease with cancel_requested.
    d.start_worker("w2")

    job = d.wait_for(job_id, "cancelled", timeout=60)
    assert job["artifacts"] == [] and d.artifact_rows(job_id) == []
    assert not (d.data_dir / "artifacts" / job_id).exists()
    assert claimed_by(d, job_id) == ["w1@faults"]  # nobody trained it again to find the cancel
    statuses = [e["data"].get("status") for e in d.events(job_id) if e["type"] == "status"]
    assert statuses[-1] == "cancelled"
    assert_no_leftovers(d)
