"""API and workers on separate hosts: they share PostgreSQL, Redis and an S3 bucket, never a folder.

The API (in-process) and two Celery worker processes each have a data folder of their own; files,
artifacts, checkpoints and resume points live in a bucket of moto's S3 server (tests/s3_server.py).
A job uploaded through the API runs on a worker, its artifact and checkpoints download through the
API, and a job whose worker is SIGKILLed resumes on the other worker from the resume point the first
one stored in the bucket. (That the resumed job ends with the uninterrupted job's weights is
tests/integration/test_worker_loss.py's to prove; here it is that the point travels between hosts.)
"""

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine
from core.models import Job
from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from service.auth import create_api_key
from tests.integration.api_client import (
    archive_members,
    create_job,
    download_artifact,
    events,
    finished,
    upload,
    wait_for_job,
)
from tests.integration.services import flushed_redis, fresh_database
from tests.s3_server import S3Bucket, new_bucket
from tests.worker.jobs import sentiment_lines
from tests.worker.processes import WorkerProcess, clean_environment, wait_for

pytestmark = pytest.mark.integration

WORKERS = ("first", "second")
STORED = ("files", "artifacts", "checkpoints", "resume")  # the folders the bucket replaces
LEASE = {
    "DELTATUNE_LEASE_SECONDS": "2",
    "DELTATUNE_HEARTBEAT_SECONDS": "0.2",
    "DELTATUNE_SWEEP_SECONDS": "0.5",
}


@dataclass
class Hosts:
    client: TestClient
    bucket: S3Bucket
    data_dirs: dict[str, Path]  # "api" and each worker's
    workers: dict[str, WorkerProcess]
    sessions: sessionmaker[Session]

    def log(self) -> str:
        return "\n".join(f"--- {name} ---\n{w.log()[-4000:]}" for name, w in self.workers.items())

    def stored(self, under: str) -> list[str]:
        """The bucket's keys under `under`, without the deltatune prefix."""
        keys = [key.removeprefix(f"{self.bucket.prefix}/") for key in self.bucket.object_keys()]
        return [key for key in keys if key.startswith(under)]


@pytest.fixture(scope="module")
def hosts(
    postgres_server: str,
    redis_server: str,
    s3_endpoint: str,
    tiny_bert_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Hosts]:
    root = tmp_path_factory.mktemp("hosts")
    bucket = new_bucket(s3_endpoint)
    models = tiny_bert_dir.parent  # each host has the base models; only the store is shared
    data_dirs = {name: root / name for name in ("api", *WORKERS)}
    with fresh_database("deltatune_s3") as database_url, flushed_redis() as broker_url:
        settings = Settings(
            database_url=database_url,
            broker_url=broker_url,
            data_dir=data_dirs["api"],
            model_dirs=[models],
            auto_migrate=False,
            **bucket.settings_fields(),
        )
        upgrade_to_head(settings.database_url)
        workers = {
            name: WorkerProcess(
                clean_environment(
                    DATABASE_URL=database_url,
                    DELTATUNE_BROKER_URL=broker_url,
                    DELTATUNE_DATA_DIR=str(data_dirs[name]),
                    DELTATUNE_MODEL_DIRS=json.dumps([str(models)]),
                    DELTATUNE_AUTO_MIGRATE="false",
                    DELTATUNE_RESUME_EVERY_STEPS="4",
                    **LEASE,
                    **bucket.environment(),
                ),
                root / f"{name}.log",
                hostname=f"{name}@localhost",
            )
            for name in WORKERS
        }
        engine = make_engine(settings.database_url)
        sessions = sessionmaker(engine, expire_on_commit=False)
        try:
            for worker in workers.values():
                worker.start()
            for worker in workers.values():
                worker.wait_ready()
            with sessions() as session:
                key = create_api_key(session, owner_name="hosts")
            with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
                yield Hosts(client, bucket, data_dirs, workers, sessions)
        finally:
            for worker in workers.values():
                worker.stop()
            engine.dispose()


def job_spec(training: str, validation: str | None, **hyperparameters: Any) -> dict[str, Any]:
    return {
        "base_model": "tiny-bert",
        "training_file": training,
        "validation_file": validation,
        "method": {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
        "hyperparameters": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-2, "logging_steps": 1}
        | hyperparameters,
    }


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_job_uploaded_to_the_api_runs_on_a_worker_of_another_data_folder(
    hosts: Hosts, tmp_path: Path
) -> None:
    client = hosts.client
    training = upload(client, sentiment_lines(32, seed=1), filename="train.jsonl")
    validation = upload(client, sentiment_lines(16, seed=2), filename="validation.jsonl")
    assert hosts.stored("files/") == sorted([f"files/{training}", f"files/{validation}"])

    job = create_job(client, job_spec(training, validation) | {"checkpoints": {}})
    job = wait_for_job(client, job["id"], finished, timeout=180, what="finished", log=hosts.log)
    assert job["status"] == "succeeded", job["error"]

    listing = download_artifact(client, job["id"], tmp_path / "artifact")  # sizes and sha256 checked
    names = sorted(artifact["name"] for artifact in listing["data"])
    published = [f"artifacts/{job['id']}/attempt-1/{name}" for name in names]
    assert hosts.stored(f"artifacts/{job['id']}/") == published
    first = listing["data"][0]
    response = client.get(first["url"])
    digest = hashlib.sha256(response.content).hexdigest()
    assert response.headers["X-Content-SHA256"] == first["sha256"] == digest
    assert sorted(archive_members(client, listing["archive_url"])) == names

    checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["step"] for c in checkpoints] == [4, 8]  # one per epoch
    for recorded in checkpoints[-1]["files"]:
        response = client.get(recorded["url"])
        assert response.status_code == 200, response.text
        assert hashlib.sha256(response.content).hexdigest() == recorded["sha256"]
    assert hosts.stored(f"resume/{job['id']}/") == []  # the job ended: nothing will resume it

    # A worker fetches a checkpoint from the bucket to start a job from it.
    from_checkpoint = {"from_checkpoint": checkpoints[-1]["id"]}
    follow_up = create_job(client, job_spec(training, None, epochs=1) | from_checkpoint)
    follow_up = wait_for_job(client, follow_up["id"], finished, timeout=180, what="finished", log=hosts.log)
    assert follow_up["status"] == "succeeded", follow_up["error"]

    # Nothing of it in any host's data folder: the bucket holds it all.
    for name, folder in hosts.data_dirs.items():
        kept = [path for path in files_in(folder) if path.split("/")[0] in STORED]
        assert kept == [], f"{name} keeps {kept}"

    assert client.delete(f"/v1/files/{validation}").status_code == 200
    assert hosts.stored("files/") == [f"files/{training}"]


def resume_point(hosts: Hosts, job_id: str) -> int:
    """The step of the job's latest complete resume point in the bucket, 0 if none."""
    manifests = [key for key in hosts.stored(f"resume/{job_id}/") if key.endswith("/manifest.json")]
    return max((int(key.split("/")[2].removeprefix("step-")) for key in manifests), default=0)


def test_a_job_killed_on_one_host_resumes_on_another_from_the_stored_point(hosts: Hosts) -> None:
    client = hosts.client
    training = upload(client, sentiment_lines(32, seed=1), filename="train.jsonl")
    job = create_job(client, job_spec(training, None, epochs=12))  # 48 steps
    job_id = job["id"]
    running = wait_for_job(
        client,
        job_id,
        lambda j: j["status"] == "running" and resume_point(hosts, job_id) >= 8,
        timeout=180,
        what="running past a stored resume point of step 8",
        log=hosts.log,
    )
    assert running["status"] == "running"
    doomed = _worker_of(hosts, job_id).split("@")[0]
    survivor = next(name for name in WORKERS if name != doomed)
    process = hosts.workers[doomed].process
    assert process is not None
    os.killpg(process.pid, signal.SIGKILL)  # the worker and its pool child, mid-step
    process.wait(timeout=30)
    hosts.workers[doomed].process = None
    resumed_from = resume_point(hosts, job_id)

    job = wait_for_job(client, job_id, finished, timeout=240, what="finished", log=hosts.log)
    assert job["status"] == "succeeded", job["error"]
    assert _worker_of(hosts, job_id) == f"{survivor}@localhost"
    history = events(client, job_id)
    assert [e["data"]["step"] for e in history if e["type"] == "metrics"] == list(range(1, 49))
    resumed = [e["message"] for e in history if e["data"].get("resumed_from_step") is not None]
    assert resumed == [f"resumed from step {resumed_from}"]
    # The survivor read the point from the bucket: its own folder never held the job's resume points.
    assert [p for p in files_in(hosts.data_dirs[survivor]) if p.startswith("resume/")] == []
    wait_for(
        lambda: hosts.stored(f"resume/{job_id}/") == [], timeout=10, what="the points removed", log=hosts.log
    )


def _worker_of(hosts: Hosts, job_id: str) -> str:
    with hosts.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.worker is not None
        return job.worker
