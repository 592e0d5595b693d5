"""The database goes down under a running API and comes back: 503 with Retry-After while it is down,
2xx again once it is back, without restarting the API."""

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from service.auth import create_api_key
from tests.faults.servers import PostgresServer
from tests.service.helpers import GOOD_LINES, job_body, jsonl

pytestmark = pytest.mark.integration

RETRY_AFTER = 7
# Routes that read nothing from the database once the key's owner is known (the method catalogue, a
# base model from a folder): with the key in the API process's cache they answer through an outage.
ANSWERED_FROM_MEMORY = {"/v1/methods", "/v1/models/tiny-bert"}


def requests_for_every_operation(client: TestClient, ids: dict[str, str]) -> list[tuple[str, str, Any]]:
    """(method, path, body) for every operation in the OpenAPI document, path parameters filled in."""
    found = []
    for template, operations in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        path = template.format(**ids)
        for method in operations:
            body = None
            if (method, template) == ("post", "/v1/jobs"):
                body = job_body(ids["file_id"])
            elif (method, template) == ("post", "/v1/transferability"):
                body = {"training_file": ids["file_id"], "base_models": ["tiny-bert"]}
            # Valid bodies: with the key's owner cached, a request's own mistake is found (4xx) before
            # the database is needed.
            elif (method, template) == ("post", "/v1/fine_tuning/jobs"):
                body = {"model": "tiny-bert", "training_file": ids["file_id"]}
            elif (method, template) == ("post", "/v1/webhooks"):
                body = {"url": "https://hooks.example.com/deltatune"}
            found.append((method.upper(), path, body))
    return found


def send(client: TestClient, headers: dict[str, str], method: str, path: str, body: Any) -> Any:
    if (method, path) == ("POST", "/v1/files"):
        files = {"file": ("train.jsonl", jsonl(GOOD_LINES), "application/jsonl")}
        return client.post(path, headers=headers, files=files, data={"purpose": "fine-tune"})
    return client.request(method, path, headers=headers, json=body)


def test_every_route_answers_503_while_the_database_is_down_then_2xx_without_a_restart(
    tmp_path: Path, tiny_bert_dir: Path, own_postgres: PostgresServer
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=own_postgres.url,
        model_dirs=[tiny_bert_dir.parent],
        retry_after_seconds=RETRY_AFTER,
        api_key_cache_seconds=300,  # as long as the outage: the key is checked once, before it
    )
    upgrade_to_head(settings.database_url)
    app = create_app(settings)
    with app.state.sessionmaker() as session:
        headers = {"Authorization": f"Bearer {create_api_key(session, owner_name='alice')}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        upload = send(client, headers, "POST", "/v1/files", None)
        assert upload.status_code == 201, upload.text
        ids = {
            "file_id": upload.json()["id"],
            "job_id": "ftjob-unknown",
            "name": "adapter_config.json",
            "checkpoint_id": "ckpt-unknown",
            "run_id": "tfrun-unknown",
            "model_id": "tiny-bert",
            "webhook_id": "wh-unknown",
            "delivery_id": "whdel-unknown",
        }
        operations = requests_for_every_operation(client, ids)
        # Deleting the file first would make the other requests' 2xx depend on the order.
        operations.sort(key=lambda operation: operation[0] == "DELETE")

        own_postgres.stop()
        for method, path, body in operations:
            response = send(client, headers, method, path, body)
            if path == "/healthz":  # liveness: the process, not its dependencies
                assert response.status_code == 200
                continue
            if path in ANSWERED_FROM_MEMORY:  # the key was checked within the cache's TTL
                assert response.status_code == 200, (path, response.text)
                continue
            assert response.status_code == 503, (method, path, response.text)
            assert response.headers["Retry-After"] == str(RETRY_AFTER), (method, path)
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["code"] in ("database_unavailable", "not_ready"), (method, path, error)
            assert str(own_postgres.port) not in error["message"] and "127.0.0.1" not in error["message"]

        own_postgres.start()
        for method, path, body in operations:
            response = send(client, headers, method, path, body)
            assert response.status_code < 500, (method, path, response.text)
        for method, path, body in [
            ("GET", "/v1/jobs", None),
            ("GET", "/v1/files", None),
            ("GET", "/v1/models", None),
            ("POST", "/v1/files", None),
            ("GET", "/readyz", None),
        ]:
            response = send(client, headers, method, path, body)
            assert 200 <= response.status_code < 300, (method, path, response.text)
        fresh = send(client, headers, "POST", "/v1/files", None).json()["id"]
        created = send(client, headers, "POST", "/v1/jobs", job_body(fresh))
        assert created.status_code == 201, created.text
