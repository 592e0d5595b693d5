"""The API on an S3 bucket (moto's server): files and artifacts stored there, streamed back with their
sha256, validated from a downloaded copy, deleted with their rows; /readyz asks the bucket."""

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.models import Artifact, Job
from core.schema_version import upgrade_to_head
from core.settings import Settings
from core.storage import open_storage
from core.storage.keys import artifact_prefix
from service.app import create_app
from tests.s3_server import S3Bucket, write_files
from tests.service.conftest import key_headers
from tests.service.helpers import GOOD_LINES, job_body, jsonl, upload


@pytest.fixture
def settings(tmp_path: Path, tiny_bert_dir: Path, s3_bucket: S3Bucket) -> Settings:
    return Settings(
        data_dir=tmp_path / "api", model_dirs=[tiny_bert_dir.parent], **s3_bucket.settings_fields()
    )  # conftest's app and client are built on these settings


def stored_files(settings: Settings) -> list[str]:
    return sorted(str(p) for p in settings.files_dir.rglob("*")) if settings.files_dir.exists() else []


def test_an_upload_lands_in_the_bucket_and_streams_back(
    app: FastAPI, client: TestClient, settings: Settings, s3_bucket: S3Bucket
) -> None:
    auth = key_headers(app, "alice")
    content = jsonl(GOOD_LINES * 50)
    response = upload(client, auth, content)
    assert response.status_code == 201, response.text
    file = response.json()
    assert s3_bucket.object_keys() == [f"deltatune/files/{file['id']}"]
    assert stored_files(settings) == [] and list((settings.data_dir / "uploads").iterdir()) == []

    download = client.get(f"/v1/files/{file['id']}/content", headers=auth)
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-length"] == str(len(content))
    assert download.headers["x-content-sha256"] == hashlib.sha256(content).hexdigest() == file["sha256"]
    assert download.headers["content-disposition"] == 'attachment; filename="train.jsonl"'

    assert client.delete(f"/v1/files/{file['id']}", headers=auth).status_code == 200
    assert s3_bucket.object_keys() == []
    assert client.get(f"/v1/files/{file['id']}/content", headers=auth).status_code == 404


def test_a_refused_upload_stores_nothing(app: FastAPI, client: TestClient, s3_bucket: S3Bucket) -> None:
    response = upload(client, key_headers(app, "alice"), b"not json at all\n")
    assert response.status_code == 422
    assert s3_bucket.object_keys() == []


def test_a_job_is_validated_from_the_file_in_the_bucket(
    app: FastAPI, client: TestClient, settings: Settings
) -> None:
    auth = key_headers(app, "alice")
    file_id = upload(client, auth).json()["id"]
    response = client.post("/v1/jobs", headers=auth, json=job_body(file_id, dry_run=True))
    assert response.status_code == 200, response.text
    assert response.json()["validation"]["files"]["training_file"]["examples"] == len(GOOD_LINES)
    assert list((settings.data_dir / "uploads").iterdir()) == []  # the copy went with the validation


def test_a_published_artifact_downloads_from_the_bucket_and_goes_with_its_job(
    app: FastAPI, client: TestClient, settings: Settings, tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    auth = key_headers(app, "alice")
    job_id = client.post("/v1/jobs", headers=auth, json=job_body(upload(client, auth).json()["id"])).json()[
        "id"
    ]
    files = {"adapter_model.safetensors": b"w" * 3_000_000, "adapter_config.json": b"{}"}
    # As a worker of another host publishes: the objects first, then the rows that name them.
    open_storage(settings).publish_folder(
        write_files(tmp_path / "out", files), artifact_prefix(job_id, 1), move=True
    )
    with app.state.sessionmaker() as session:
        for name, content in files.items():
            session.add(
                Artifact(
                    job_id=job_id, name=name, bytes=len(content), sha256=hashlib.sha256(content).hexdigest()
                )
            )
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.attempt = "succeeded", 1
        session.commit()

    for name, content in files.items():
        response = client.get(f"/v1/jobs/{job_id}/artifacts/{name}", headers=auth)
        assert response.status_code == 200 and response.content == content
        assert response.headers["x-content-sha256"] == hashlib.sha256(content).hexdigest()
    archive = client.get(f"/v1/jobs/{job_id}/artifacts.tar.gz", headers=auth)
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as opened:
        members = {m.name: opened.extractfile(m).read() for m in opened.getmembers()}  # type: ignore[union-attr]
    assert members == {f"{job_id}/{name}": content for name, content in files.items()}

    assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 200
    assert [key for key in s3_bucket.object_keys() if "/artifacts/" in key] == []


def test_readiness_asks_the_bucket(client: TestClient, tmp_path: Path, s3_bucket: S3Bucket) -> None:
    assert client.get("/readyz").status_code == 200
    gone = Settings(
        data_dir=tmp_path / "other", **(s3_bucket.settings_fields() | {"s3_bucket": "no-such-bucket"})
    )
    with TestClient(create_app(gone)) as other:
        response = other.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["param"] == "storage" and "no-such-bucket" in error["message"]


def test_an_unreachable_store_answers_503_and_keeps_nothing(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    # Nothing listens on port 1: the store is down.
    down = Settings(
        data_dir=tmp_path / "api", **(s3_bucket.settings_fields() | {"s3_endpoint_url": "http://127.0.0.1:1"})
    )
    down.data_dir.mkdir(parents=True)
    upgrade_to_head(down.database_url)
    app = create_app(down)
    with TestClient(app) as client:
        response = upload(client, key_headers(app, "alice"))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "storage_unavailable"
        assert response.headers["retry-after"] == str(down.retry_after_seconds)
        assert client.get("/v1/files", headers=key_headers(app, "alice")).json()["data"] == []
        assert list((down.data_dir / "uploads").iterdir()) == []
        assert client.get("/readyz").json()["error"]["param"] == "storage"
