"""A job that finishes on a real worker (PostgreSQL, Redis, a Celery worker process, a tiny model)
produces a signed POST to a receiver on a loopback port: the owner's endpoint and the job's own URL."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker
from standardwebhooks import Webhook

from core.db import make_engine
from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from service.auth import create_api_key
from tests.integration.api_client import create_job, finished, upload, wait_for_job
from tests.integration.services import flushed_redis, fresh_database
from tests.worker.jobs import sentiment_lines
from tests.worker.processes import WorkerProcess, clean_environment, wait_for
from tests.worker.receiver import Receiver

pytestmark = pytest.mark.integration


def test_a_finished_job_posts_a_signed_webhook_to_a_loopback_receiver(
    postgres_server: str, redis_server: str, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    models = tiny_bert_dir.parent
    with fresh_database() as database_url, flushed_redis() as broker_url, Receiver([503, 200]) as receiver:
        env = {
            "DATABASE_URL": database_url,
            "DELTATUNE_BROKER_URL": broker_url,
            "DELTATUNE_DATA_DIR": str(data_dir),
            "DELTATUNE_MODEL_DIRS": json.dumps([str(models)]),
            "DELTATUNE_HEARTBEAT_SECONDS": "0.2",
            "DELTATUNE_AUTO_MIGRATE": "false",
            "DELTATUNE_WEBHOOK_ALLOWED_HOSTS": '["loopback"]',
            "DELTATUNE_WEBHOOK_RETRY_SECONDS": "[0.5]",
            "DELTATUNE_WEBHOOK_POLL_SECONDS": "0.2",
        }
        settings = Settings(
            database_url=database_url,
            broker_url=broker_url,
            data_dir=data_dir,
            model_dirs=[models],
            auto_migrate=False,
            webhook_allowed_hosts=["loopback"],
        )
        upgrade_to_head(settings.database_url)
        worker = WorkerProcess(
            clean_environment(**env), tmp_path / "worker.log", hostname="webhooks@localhost"
        )
        engine = make_engine(settings.database_url)
        try:
            worker.start().wait_ready()
            with sessionmaker(engine)() as session:
                key = create_api_key(session, owner_name="hooked")
            with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
                endpoint = client.post("/v1/webhooks", json={"url": receiver.url + "/owner"})
                assert endpoint.status_code == 201, endpoint.text
                secret = endpoint.json()["secret"]
                training = upload(client, sentiment_lines(16, seed=1), filename="train.jsonl")
                spec = {
                    "base_model": "tiny-bert",
                    "training_file": training,
                    "method": {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
                    "hyperparameters": {"epochs": 1, "batch_size": 8},
                    "webhook_url": receiver.url + "/job",
                }
                job = create_job(client, spec)
                job = wait_for_job(client, job["id"], finished, timeout=120, what="finished", log=worker.log)
                assert job["status"] == "succeeded", job["error"]

                def both_delivered() -> list[dict[str, object]] | None:
                    listing = client.get("/v1/webhooks/deliveries", params={"job_id": job["id"]}).json()
                    done = all(d["status"] == "delivered" for d in listing["data"])
                    return listing["data"] if done and len(listing["data"]) == 2 else None

                listed = wait_for(both_delivered, timeout=30, what="both deliveries", log=worker.log)
        finally:
            worker.stop()
            engine.dispose()

    by_path: dict[str, list[dict[str, object]]] = {}
    for request in receiver.received:
        payload = Webhook(secret).verify(request.body, request.headers)  # signed with the owner's secret
        assert payload["type"] == "fine_tuning.job.succeeded" and payload["data"]["id"] == job["id"]
        by_path.setdefault(request.path, []).append(payload)
    # The first POST got a 503 and was retried; the other went through at once.
    assert sorted(len(payloads) for payloads in by_path.values()) == [1, 2]
    assert set(by_path) == {"/hooks/owner", "/hooks/job"}
    assert sorted(d["attempts"] for d in listed) == [1, 2]  # type: ignore[type-var]
    assert {d["url"] for d in listed} == {receiver.url + "/owner", receiver.url + "/job"}
