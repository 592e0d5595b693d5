"""DELETE /v1/jobs/{id}: a finished job goes with its events, artifact, checkpoints and resume points;
an unfinished one, or one another job needs, stays (409)."""

from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.models import Checkpoint, Job
from core.settings import Settings
from tests.service.helpers import create_job, files_on_disk, publish_artifact, set_job


def test_a_finished_job_goes_with_everything_it_stored(
    app: FastAPI, client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    job = create_job(client, auth)
    publish_artifact(app, settings, job["id"], {"adapter_model.safetensors": b"w"})
    for folder in (
        settings.checkpoints_dir / job["id"] / "ckpt-1",
        settings.resume_dir / job["id"] / "step-1",
    ):
        folder.mkdir(parents=True)
        (folder / "weights").write_bytes(b"x")

    response = client.delete(f"/v1/jobs/{job['id']}", headers=auth)

    assert response.status_code == 200, response.text
    assert response.json() == {"id": job["id"], "object": "fine_tuning.job", "deleted": True}
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/events", headers=auth).status_code == 404
    for folder in (settings.artifacts_dir, settings.checkpoints_dir, settings.resume_dir):
        assert files_on_disk(folder) == []
    assert client.delete(f"/v1/jobs/{job['id']}", headers=auth).status_code == 404


def test_an_unfinished_job_is_not_deleted(client: TestClient, auth: dict[str, str]) -> None:
    job = create_job(client, auth)
    response = client.delete(f"/v1/jobs/{job['id']}", headers=auth)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_not_finished"
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).status_code == 200


def test_a_job_another_builds_on_is_not_deleted(
    app: FastAPI, client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    source, follower = create_job(client, auth), create_job(client, auth)
    publish_artifact(app, settings, source["id"], {"model.safetensors": b"w"})
    set_job(app, follower["id"], base_model=source["id"], status="succeeded")
    response = client.delete(f"/v1/jobs/{source['id']}", headers=auth)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "job_in_use" and follower["id"] in error["message"]
    assert files_on_disk(settings.artifacts_dir) != []


def test_another_owners_job_is_unknown(
    app: FastAPI, client: TestClient, settings: Settings, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    job = create_job(client, auth)
    publish_artifact(app, settings, job["id"], {"a.bin": b"w"})
    assert client.delete(f"/v1/jobs/{job['id']}", headers=other_auth).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).status_code == 200


def test_a_job_whose_checkpoint_a_queued_job_starts_from_is_not_deleted(
    app: FastAPI, client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    source, follower = create_job(client, auth), create_job(client, auth)
    publish_artifact(app, settings, source["id"], {"model.safetensors": b"w"})
    with app.state.sessionmaker() as session:
        session.add(Checkpoint(id="ckpt-kept", job_id=source["id"], step=4, epoch=1.0, files=[], bytes=0))
        job = session.get(Job, follower["id"])
        assert job is not None
        job.spec = {**job.spec, "from_checkpoint": "ckpt-kept"}
        session.commit()
    response = client.delete(f"/v1/jobs/{source['id']}", headers=auth)
    assert response.status_code == 409 and response.json()["error"]["code"] == "job_in_use"
    set_job(app, follower["id"], status="cancelled")  # once it ended, nothing needs the checkpoint
    assert client.delete(f"/v1/jobs/{source['id']}", headers=auth).status_code == 200
