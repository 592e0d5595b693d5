"""/v1/jobs/{id}/artifacts: listed from the Artifact table, streamed with their sha256, archived whole."""

import hashlib
import io
import os
import tarfile

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.service.helpers import create_job, publish_artifact, set_job

ARTIFACT = {
    "adapter_config.json": b'{"peft_type": "LORA", "r": 4}',
    "adapter_model.safetensors": os.urandom(300_000),
    "merged/config.json": b'{"model_type": "bert"}',
}


@pytest.fixture
def succeeded_job(app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings) -> str:
    job_id = str(create_job(client, auth)["id"])
    publish_artifact(app, settings, job_id, ARTIFACT)
    return job_id


def test_artifacts_are_listed_with_size_and_sha256(
    client: TestClient, auth: dict[str, str], succeeded_job: str
) -> None:
    listing = client.get(f"/v1/jobs/{succeeded_job}/artifacts", headers=auth).json()
    by_name = {a["name"]: a for a in listing["data"]}
    assert set(by_name) == set(ARTIFACT)
    for name, content in ARTIFACT.items():
        assert by_name[name]["bytes"] == len(content)
        assert by_name[name]["sha256"] == hashlib.sha256(content).hexdigest()
        assert by_name[name]["url"] == f"/v1/jobs/{succeeded_job}/artifacts/{name}"
    assert listing["archive_url"] == f"/v1/jobs/{succeeded_job}/artifacts.tar.gz"
    job = client.get(f"/v1/jobs/{succeeded_job}", headers=auth).json()
    assert job["status"] == "succeeded" and job["artifacts"] == listing["data"]
    listed_jobs = client.get("/v1/jobs", headers=auth).json()["data"]
    assert listed_jobs[0]["artifacts"] == listing["data"]


def test_each_artifact_downloads_with_its_sha256(
    client: TestClient, auth: dict[str, str], succeeded_job: str
) -> None:
    for name, content in ARTIFACT.items():
        response = client.get(f"/v1/jobs/{succeeded_job}/artifacts/{name}", headers=auth)
        assert response.status_code == 200, response.text
        assert response.content == content
        assert response.headers["x-content-sha256"] == hashlib.sha256(content).hexdigest()
        assert name.rsplit("/", 1)[-1] in response.headers["content-disposition"]


def test_archive_holds_the_whole_artifact(
    client: TestClient, auth: dict[str, str], succeeded_job: str
) -> None:
    response = client.get(f"/v1/jobs/{succeeded_job}/artifacts.tar.gz", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert f"{succeeded_job}.tar.gz" in response.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    assert members == {f"{succeeded_job}/{name}": content for name, content in ARTIFACT.items()}


@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
def test_archive_of_an_unfinished_job_is_409(
    app: FastAPI, client: TestClient, auth: dict[str, str], status: str
) -> None:
    job_id = create_job(client, auth)["id"]
    set_job(app, job_id, status=status)
    response = client.get(f"/v1/jobs/{job_id}/artifacts.tar.gz", headers=auth)
    assert response.status_code == 409 and response.json()["error"]["code"] == "job_not_succeeded"
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["artifacts"] == []


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fdeltatune.db",
        "%2E%2E/%2E%2E/deltatune.db",
        "merged/..%2F..%2F..%2Fdeltatune.db",
        "%2Fetc%2Fpasswd",
        "adapter_config.json%00",
        "ADAPTER_CONFIG.JSON",
        "merged",
    ],
)
def test_names_outside_the_table_are_refused(
    client: TestClient, auth: dict[str, str], succeeded_job: str, settings: Settings, name: str
) -> None:
    assert (settings.data_dir / "deltatune.db").is_file()
    response = client.get(f"/v1/jobs/{succeeded_job}/artifacts/{name}", headers=auth)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "artifact_not_found"
    assert b"SQLite" not in response.content


def test_artifact_missing_from_storage_is_a_server_error(
    client: TestClient, auth: dict[str, str], succeeded_job: str, settings: Settings
) -> None:
    (settings.artifacts_dir / succeeded_job / "adapter_config.json").unlink()
    response = client.get(f"/v1/jobs/{succeeded_job}/artifacts/adapter_config.json", headers=auth)
    assert response.status_code == 500 and response.json()["error"]["code"] == "artifact_missing"
    assert str(settings.data_dir) not in response.text
