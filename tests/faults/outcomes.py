"""What every fault test asserts of a job that must come through: it ended as if never interrupted.

One successful publish (one set of artifact rows, the files on disk, downloads matching their sha256,
the same bytes on a second download), one continuous series of step events, no scratch or staging
left in the data folder.
"""

from typing import Any

from tests.faults.harness import Deployment, Download


def assert_published_once(deployment: Deployment, job_id: str) -> Download:
    """Exactly one artifact set: its rows, its folder's files, and downloads of it all agree."""
    job = deployment.job(job_id)
    assert job["status"] == "succeeded", job["error"]
    rows = deployment.artifact_rows(job_id)
    names = [name for name, _, _ in rows]
    assert names and len(names) == len(set(names)), f"artifact rows are not one set: {rows}"
    assert sorted(a["name"] for a in job["artifacts"]) == names
    published = deployment.published(job_id)
    assert len(published) == 1, f"not one published folder: {published}"
    assert list(published.values()) == [names], f"the published files differ from the rows: {published}"
    first = deployment.download(job_id)
    assert first.sha256 == {name: digest for name, _, digest in rows}
    again = deployment.download(job_id)
    assert again.sha256 == first.sha256, "a second download differs from the first"
    return first


def assert_one_series(deployment: Deployment, job_id: str) -> list[int]:
    """The metrics events (one a step: logging_steps 1) are 1..total_steps once each, in order, and the
    job's progress is complete."""
    metrics = [event["data"] for event in deployment.events(job_id) if event["type"] == "metrics"]
    assert metrics, "no metrics events"
    total = int(metrics[-1]["total_steps"])
    steps = [int(data["step"]) for data in metrics]
    duplicated = sorted({step for step in steps if steps.count(step) > 1})
    assert not duplicated, f"steps with more than one metrics event: {duplicated}"
    assert steps == sorted(steps), f"steps out of order: {steps}"
    assert steps == list(range(1, total + 1)), f"not one series 1..{total}: {steps}"
    return steps


def assert_no_leftovers(deployment: Deployment) -> None:
    leftovers = deployment.leftover_folders()
    assert leftovers == [], f"scratch or staging left in the data folder: {leftovers}"


def assert_came_through(deployment: Deployment, job_id: str) -> Download:
    """Succeeded, published once, one series of steps, nothing left behind."""
    download = assert_published_once(deployment, job_id)
    assert_one_series(deployment, job_id)
    assert_no_leftovers(deployment)
    return download


def claimed_by(deployment: Deployment, job_id: str) -> list[Any]:
    """The worker of each attempt, in order."""
    return [event["data"].get("worker") for event in deployment.claims(job_id)]
