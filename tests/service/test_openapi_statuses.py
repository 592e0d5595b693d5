"""Every status a route answers is in its OpenAPI entry: the document is walked, and each operation is
sent what a careless or hostile client sends (no key, unknown ids, bad queries and bodies, a database
that is down); each answer's status must be documented for that operation."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.settings import Settings
from service.app import create_app
from tests.faults.servers import free_port
from tests.service.helpers import GOOD_LINES, create_job, job_body, jsonl, uploaded_file_id

Operation = tuple[str, str]  # (method, path template)


def operations(app: FastAPI) -> dict[Operation, dict[str, Any]]:
    return {
        (method.upper(), path): entry
        for path, entries in app.openapi()["paths"].items()
        for method, entry in entries.items()
    }


def documented(app: FastAPI, operation: Operation) -> set[int]:
    return {int(status) for status in operations(app)[operation]["responses"]}


def filled(path: str, ids: dict[str, str]) -> str:
    names = ("job_id", "file_id", "name", "checkpoint_id", "run_id", "webhook_id", "delivery_id", "model_id")
    return path.format(**{name: ids.get(name, "unknown-id") for name in names})


def bad_requests(
    operation: Operation, entry: dict[str, Any], ids: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """httpx request arguments a careless or hostile client might send to `operation`."""
    method, template = operation
    path = filled(template, ids)
    yield {"method": method, "url": path}  # as it is (with the key)
    yield {"method": method, "url": path, "auth_headers": {}}  # no key
    yield {"method": method, "url": path, "auth_headers": {"Authorization": "Bearer dt-revoked"}}
    if "{" in template:
        yield {"method": method, "url": filled(template, {})}  # unknown (or another owner's) ids
    names = {parameter["name"] for parameter in entry.get("parameters", []) if parameter["in"] == "query"}
    for name, value in (
        ("limit", "0"),
        ("limit", "many"),
        ("limit", "101"),
        ("after", "nope"),
        ("after", "-1"),
    ):
        if name in names:
            yield {"method": method, "url": path, "params": {name: value}}
    if method == "POST":
        yield {
            "method": method,
            "url": path,
            "content": b"{",
            "headers": {"Content-Type": "application/json"},
        }
        yield {
            "method": method,
            "url": path,
            "content": b"[1, 2]",
            "headers": {"Content-Type": "application/json"},
        }
        yield {"method": method, "url": path, "content": b"x=1", "headers": {"Content-Type": "text/plain"}}
        yield {"method": method, "url": path, "json": {"base_model": 3, "extra": True}}
        yield {"method": method, "url": path, "json": {"x": "y" * 300_000}}  # over the body limit
        yield {"method": method, "url": path, "headers": {"Idempotency-Key": "has space"}, "json": {}}


def specific_requests(ids: dict[str, str]) -> dict[Operation, list[dict[str, Any]]]:
    """Requests that reach deeper checks of the creating routes."""
    multipart = {"Content-Type": "multipart/form-data; boundary=b"}
    return {
        ("POST", "/v1/files"): [
            {"files": {"file": ("t.jsonl", b'{"oops"\n')}, "data": {"purpose": "fine-tune"}},
            {"files": {"file": ("t.jsonl", jsonl(GOOD_LINES))}, "data": {"purpose": "assistants"}},
            {"files": {"other": ("t.jsonl", b"x")}, "data": {"purpose": "fine-tune"}},
            {
                "content": b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n{"te',
                "headers": multipart,
            },
            {"content": b"--b--\r\n", "headers": multipart},
            {"files": {"file": ("t.jsonl", b"x" * 70_000)}, "data": {"purpose": "fine-tune"}},
        ],
        ("POST", "/v1/jobs"): [
            {"json": job_body("file-unknown")},
            {"json": job_body(ids["file_id"], base_model="no-such-model")},
            {"json": job_body(ids["file_id"], from_checkpoint="ckpt-unknown")},
            {"json": job_body(ids["file_id"], method={"type": "lora", "target_modules": ["nonexistent"]})},
            {"json": job_body(ids["file_id"], method={"type": "nope"})},
            {"json": job_body(ids["file_id"], dry_run=True)},
            {"json": job_body(ids["file_id"]), "headers": {"Idempotency-Key": "k1"}},
            {"json": job_body(ids["file_id"], metadata={"run": "2"}), "headers": {"Idempotency-Key": "k1"}},
        ],
        ("POST", "/v1/jobs/{job_id}/cancel"): [{}, {}],  # the second cancel finds it finished: 409
        ("DELETE", "/v1/files/{file_id}"): [{}],  # used by a queued job: 409
        ("POST", "/v1/transferability"): [
            {"json": {"training_file": "file-unknown", "base_models": ["tiny-bert"]}},
            {"json": {"training_file": ids["file_id"], "base_models": ["no-such-model"]}},
        ],
    }


def send(client: TestClient, auth: dict[str, str], request: dict[str, Any], path: str | None = None) -> Any:
    arguments = dict(request)
    headers = {**arguments.pop("auth_headers", auth), **arguments.pop("headers", {})}
    method = arguments.pop("method", None)
    url = arguments.pop("url", path)
    return client.request(method, url, headers=headers, **arguments)


def test_every_status_an_operation_answers_is_documented(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    file_id = uploaded_file_id(client, auth)
    job = create_job(client, auth)
    ids = {"file_id": job["training_file"], "job_id": job["id"], "spare_file": file_id}
    undocumented = []
    answered: dict[Operation, set[int]] = {}
    specific = specific_requests({"file_id": file_id})
    for operation, entry in operations(app).items():
        requests = list(bad_requests(operation, entry, ids))
        requests += [
            {"method": operation[0], "url": filled(operation[1], ids), **extra}
            for extra in specific.get(operation, [])
        ]
        for request in requests:
            response = send(client, auth, request)
            answered.setdefault(operation, set()).add(response.status_code)
            if response.status_code not in documented(app, operation):
                undocumented.append(
                    f"{operation} answered {response.status_code} to {request}: {response.text[:200]}"
                )
    assert not undocumented, "\n".join(undocumented)
    # The deliberate requests reached what they were aimed at.
    assert {400, 404, 413, 415, 422} <= answered[("POST", "/v1/jobs")]
    assert {400, 413, 415, 422} <= answered[("POST", "/v1/files")]
    assert 409 in answered[("POST", "/v1/jobs/{job_id}/cancel")]
    assert 409 in answered[("DELETE", "/v1/files/{file_id}")]


def test_a_database_that_is_down_is_documented_as_503_everywhere(tmp_path: Path, tiny_bert_dir: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    app = create_app(settings)
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: it would migrate
    for operation in operations(app):
        response = client.request(
            operation[0], filled(operation[1], {}), headers={"Authorization": "Bearer dt-x"}
        )
        if operation == ("GET", "/healthz"):
            assert response.status_code == 200
            continue
        assert response.status_code == 503, (operation, response.text)
        assert 503 in documented(app, operation), operation
        assert "Retry-After" in operations(app)[operation]["responses"]["503"]["headers"]


@pytest.mark.parametrize("status", [503])
def test_the_503_entry_documents_retry_after(app: FastAPI, status: int) -> None:
    entry = operations(app)[("GET", "/v1/jobs")]["responses"][str(status)]
    assert entry["headers"]["Retry-After"]["schema"] == {"type": "integer"}
