"""/v1/jobs/{id}/checkpoints: listing, downloads, owner scoping; the from_checkpoint checks."""

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.settings import Settings
from core.storage import open_storage
from tests.service.helpers import create_job, job_body, uploaded_file_id
from tests.worker.jobs import claim
from tuning.checkpoints import Checkpoint
from worker.checkpoints import CheckpointPublisher
from worker.lifecycle import Attempt

FILES = {"deltatune.json": b'{"layout": "peft"}', "adapter_model.safetensors": bytes(range(256)) * 40}


def publish(settings: Settings, attempt: Attempt, folder: Path, step: int) -> None:
    """Store a checkpoint the way the worker does while the job trains."""
    for name, content in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    publisher = CheckpointPublisher(attempt, storage=open_storage(settings))
    publisher(Checkpoint(step, step / 4, {"val_loss": 0.5 / step}, folder, list(FILES)), [])


@pytest.fixture
def job_with_checkpoints(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path
) -> dict[str, Any]:
    job = create_job(client, auth)
    attempt = claim(app.state.sessionmaker, job["id"])
    publish(settings, attempt, tmp_path / "step-4", 4)
    publish(settings, attempt, tmp_path / "step-2", 2)
    return job


def checkpoints(client: TestClient, headers: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/checkpoints", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def test_checkpoints_are_listed_oldest_step_first(
    client: TestClient, auth: dict[str, str], job_with_checkpoints: dict[str, Any]
) -> None:
    listed = checkpoints(client, auth, job_with_checkpoints["id"])
    assert [(c["step"], c["epoch"], c["metrics"]) for c in listed] == [
        (2, 0.5, {"val_loss": 0.25}),
        (4, 1.0, {"val_loss": 0.125}),
    ]
    first = listed[0]
    assert first["object"] == "fine_tuning.job.checkpoint" and first["job_id"] == job_with_checkpoints["id"]
    assert first["bytes"] == sum(len(content) for content in FILES.values())
    assert {f["name"]: f["sha256"] for f in first["files"]} == {
        name: hashlib.sha256(content).hexdigest() for name, content in FILES.items()
    }
    assert (
        first["archive_url"]
        == f"/v1/jobs/{job_with_checkpoints['id']}/checkpoints/{first['id']}/archive.tar.gz"
    )


def test_checkpoint_files_and_archive_download(
    client: TestClient, auth: dict[str, str], job_with_checkpoints: dict[str, Any]
) -> None:
    checkpoint = checkpoints(client, auth, job_with_checkpoints["id"])[1]
    for listed in checkpoint["files"]:
        response = client.get(listed["url"], headers=auth)
        assert response.status_code == 200, response.text
        assert response.content == FILES[listed["name"]]
        assert response.headers["x-content-sha256"] == listed["sha256"]
    archive = client.get(checkpoint["archive_url"], headers=auth)
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert members == {f"{checkpoint['id']}/{name}": content for name, content in FILES.items()}
    missing = client.get(
        f"/v1/jobs/{job_with_checkpoints['id']}/checkpoints/{checkpoint['id']}/files/x", headers=auth
    )
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "name"


def test_another_owners_checkpoints_are_not_found(
    client: TestClient,
    auth: dict[str, str],
    other_auth: dict[str, str],
    job_with_checkpoints: dict[str, Any],
) -> None:
    job_id = job_with_checkpoints["id"]
    checkpoint = checkpoints(client, auth, job_id)[0]
    for url in (f"/v1/jobs/{job_id}/checkpoints", checkpoint["archive_url"], checkpoint["files"][0]["url"]):
        response = client.get(url, headers=other_auth)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "job_not_found"
    unknown = client.get(f"/v1/jobs/{job_id}/checkpoints/ckpt-nope/archive.tar.gz", headers=auth)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "checkpoint_not_found"


def test_a_job_starts_from_its_owners_matching_checkpoint(
    client: TestClient, auth: dict[str, str], job_with_checkpoints: dict[str, Any]
) -> None:
    checkpoint_id = checkpoints(client, auth, job_with_checkpoints["id"])[1]["id"]
    job = create_job(
        client, auth, from_checkpoint=checkpoint_id, hyperparameters={"epochs": 2, "batch_size": 2}
    )
    assert job["status"] == "queued" and job["spec"]["from_checkpoint"] == checkpoint_id


def test_from_checkpoint_is_refused_when_unknown_or_anothers(
    client: TestClient,
    auth: dict[str, str],
    other_auth: dict[str, str],
    job_with_checkpoints: dict[str, Any],
) -> None:
    checkpoint_id = checkpoints(client, auth, job_with_checkpoints["id"])[0]["id"]
    training = uploaded_file_id(client, other_auth)
    for candidate in (checkpoint_id, "ckpt-nope"):
        response = client.post(
            "/v1/jobs", headers=other_auth, json=job_body(training, from_checkpoint=candidate)
        )
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("checkpoint_not_found", "from_checkpoint")


def test_from_checkpoint_must_match_base_task_method_and_head(
    client: TestClient, auth: dict[str, str], job_with_checkpoints: dict[str, Any]
) -> None:
    checkpoint_id = checkpoints(client, auth, job_with_checkpoints["id"])[0]["id"]
    training = uploaded_file_id(client, auth)
    other_rank = {"type": "lora", "r": 8, "alpha": 8, "target_modules": ["query", "value"]}
    changes: list[tuple[dict[str, Any], str]] = [
        ({"method": other_rank}, "method"),
        ({"head": {"type": "mlp", "hidden_size": 16}}, "head"),
    ]
    for change, named in changes:
        response = client.post(
            "/v1/jobs", headers=auth, json=job_body(training, from_checkpoint=checkpoint_id, **change)
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("checkpoint_mismatch", "from_checkpoint")
        assert named in error["message"]
