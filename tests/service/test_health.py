"""/healthz and /readyz: no auth; readiness really touches the database and the broker."""

import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from service.app import create_app

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: a broker that is down


def test_healthz_needs_no_key(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_with_sqlite_and_filesystem_broker(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
    }


@pytest.mark.parametrize("folder", ["files", "artifacts", "work"])
def test_a_data_folder_that_cannot_be_written_is_503_without_its_path(
    client: TestClient, settings: Settings, folder: str
) -> None:
    # Root writes through permission bits: a plain file where the folder belongs stops any write.
    shutil.rmtree(settings.data_dir / folder, ignore_errors=True)
    (settings.data_dir / folder).write_text("not a folder")
    response = client.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["param"] == "storage" and error["code"] == "not_ready"
    assert f"storage not writable ({folder}/:" in error["message"]
    assert str(settings.data_dir) not in error["message"]


def test_missing_broker_folder_is_503(client: TestClient, settings: Settings) -> None:
    shutil.rmtree(settings.broker_dir / "queue")
    response = client.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready" and error["param"] == "broker"
    assert "broker" in error["message"] and "database" not in error["message"]


def test_unreachable_database_is_503(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url="postgresql://postgres@127.0.0.1:1/none"
    )  # nothing listens on port 1
    client = TestClient(create_app(settings))  # no lifespan: it would try to migrate the missing database
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["param"] == "database"
    assert "database unreachable" in response.json()["error"]["message"]


def test_unreachable_redis_broker_is_503_quickly(tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(data_dir=tmp_path, broker_url=CLOSED_PORT_REDIS)))
    started = time.monotonic()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "broker unreachable" in response.json()["error"]["message"]
    assert time.monotonic() - started < 15


@pytest.mark.integration
def test_local_redis_broker_is_ready(redis_server: str, tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(data_dir=tmp_path, broker_url=redis_server)))
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
