"""A client's view of deltatune over HTTP: upload, create a job, poll it, download its artifact.

Takes an httpx.Client: FastAPI's TestClient (the API in-process) is one, so is a client of a server.
"""

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

FINISHED = ("succeeded", "failed", "cancelled")

ApiClient = httpx.Client | TestClient


def upload(client: ApiClient, lines: list[str], *, filename: str) -> str:
    body = ("\n".join(lines) + "\n").encode()
    response = client.post(
        "/v1/files", files={"file": (filename, body, "application/jsonl")}, data={"purpose": "fine-tune"}
    )
    assert response.status_code == 201, response.text
    file = response.json()
    assert file["status"] == "processed", file
    return str(file["id"])


def create_job(client: ApiClient, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def get_job(client: ApiClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def events(client: ApiClient, job_id: str) -> list[dict[str, Any]]:
    """Every event of the job, oldest first, following the `after` cursor."""
    collected: list[dict[str, Any]] = []
    while True:
        params = {"limit": 100} | ({"after": collected[-1]["id"]} if collected else {})
        response = client.get(f"/v1/jobs/{job_id}/events", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        collected += page["data"]
        if not page["has_more"]:
            return collected


def wait_for_job(
    client: ApiClient,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    *,
    timeout: float,
    what: str,
    log: Callable[[], str],
) -> dict[str, Any]:
    """Poll the job until `until(job)`; fail with the job and the worker's log after `timeout`."""
    deadline = time.monotonic() + timeout
    job = get_job(client, job_id)
    while not until(job):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for job {job_id} to be {what}: {job['status']}\n"
                f"job: {json.dumps(job, indent=1)[:3000]}\n--- worker log ---\n{log()[-8000:]}"
            )
        time.sleep(0.3)
        job = get_job(client, job_id)
    return job


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in FINISHED


def download_artifact(client: ApiClient, job_id: str, folder: Path) -> dict[str, Any]:
    """Download every artifact file into `folder`, checking each against the listed size and sha256."""
    listing = client.get(f"/v1/jobs/{job_id}/artifacts")
    assert listing.status_code == 200, listing.text
    body: dict[str, Any] = listing.json()
    folder.mkdir(parents=True, exist_ok=True)
    for artifact in body["data"]:
        response = client.get(artifact["url"])
        assert response.status_code == 200, response.text
        assert len(response.content) == artifact["bytes"]
        assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
        (folder / artifact["name"]).write_bytes(response.content)
    return body


def archive_members(client: ApiClient, archive_url: str) -> dict[str, bytes]:
    response = client.get(archive_url)
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        return {
            Path(member.name).name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.isfile()
        }
