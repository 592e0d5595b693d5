"""/v1/jobs: create (validated, committed, then enqueued), list, get, cancel and events."""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.models import Job, JobEvent
from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from tests.service.helpers import (
    broker_messages,
    create_job,
    job_body,
    jsonl,
    set_job,
    statuses_when_sent,
    upload,
    uploaded_file_id,
)


def test_create_job_commits_then_enqueues_it(
    app: FastAPI,
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    training, validation = uploaded_file_id(client, auth), uploaded_file_id(client, auth)
    body = job_body(training, validation_file=validation)
    seen_by_a_worker = statuses_when_sent(app, monkeypatch, Job)
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")
    assert job["status"] == "queued" and job["base_model"] == "tiny-bert"
    assert job["training_file"] == training and job["validation_file"] == validation
    assert job["method"] == {
        "type": "lora",
        "r": 4,
        "alpha": 8.0,
        "dropout": 0.0,
        "target_modules": ["query", "value"],
        "use_rslora": False,
        "layers_to_transform": None,
        "rank_pattern": {},
        "loraplus_lr_ratio": None,
    }
    assert job["spec"]["hyperparameters"]["epochs"] == 1 and job["spec"]["hyperparameters"]["seed"] == 42
    assert job["metadata"] == {"run": "test"}
    assert job["started_at"] is None and job["finished_at"] is None and job["error"] is None
    assert job["progress"] == 0.0 and job["artifacts"] == [] and job["cancel_requested"] is False

    assert seen_by_a_worker == ["queued"]  # committed before the message left
    assert broker_messages(settings) == [{"task": "deltatune.run_job", "args": [job["id"]], "queue": "cpu"}]
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json() == job


def invalid_job(
    client: TestClient, auth: dict[str, str], settings: Settings, body: Any, status: int
) -> dict[str, Any]:
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == status, response.text
    assert broker_messages(settings) == [], "nothing may be enqueued for a refused job"
    assert client.get("/v1/jobs", headers=auth).json()["data"] == []
    return dict(response.json()["error"])


def test_unknown_base_model_lists_the_known_ones(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    body = job_body(uploaded_file_id(client, auth), base_model="gpt-17")
    error = invalid_job(client, auth, settings, body, 400)
    assert error["param"] == "base_model" and error["code"] == "model_not_found"
    assert "gpt-17" in error["message"]
    assert "tiny-bert" in error["message"] and "sentence-transformers/all-MiniLM-L6-v2" in error["message"]


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"method": {"type": "prefix_magic"}}, "method.type", "union_tag_invalid"),
        ({"method": {"type": "lora", "r": 0}}, "method.r", "greater_than_equal"),
        (
            {"method": {"type": "lora", "target_modules": ["query", 7]}},
            "method.target_modules[1]",
            "string_type",
        ),
        ({"hyperparameters": {"epochs": "many"}}, "hyperparameters.epochs", "int_parsing"),
        ({"hyperparameters": {"learning_rate": "fast"}}, "hyperparameters.learning_rate", "float_parsing"),
        ({"hyperparameters": {"epochs": 1, "lr": 0.1}}, "hyperparameters.lr", "extra_forbidden"),
        ({"colour": "blue"}, "colour", "extra_forbidden"),
        ({"task": "translation"}, "task", "literal_error"),
        ({"metadata": {"k": 1}}, "metadata.k", "string_type"),
    ],
)
def test_invalid_spec_names_the_field(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    change: dict[str, Any],
    param: str,
    code: str,
) -> None:
    body = {**job_body(uploaded_file_id(client, auth)), **change}
    error = invalid_job(client, auth, settings, body, 422)
    assert error["param"] == param and error["code"] == code
    assert error["message"].startswith(f"{param}:")


def test_missing_field_and_malformed_json(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    body = job_body("file-x")
    del body["training_file"]
    error = invalid_job(client, auth, settings, body, 422)
    assert error["param"] == "training_file" and error["code"] == "missing"

    response = client.post(
        "/v1/jobs", headers={**auth, "Content-Type": "application/json"}, content=b'{"base_model": '
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_json" and "position 15" in error["message"]

    not_json = client.post(
        "/v1/jobs", headers={**auth, "Content-Type": "text/plain"}, content=b"base_model=x"
    )
    assert not_json.status_code == 415
    assert broker_messages(settings) == []


def test_training_file_must_be_owned_and_processed(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], settings: Settings
) -> None:
    error = invalid_job(client, auth, settings, job_body("file-missing"), 400)
    assert error["param"] == "training_file" and error["code"] == "file_not_found"

    theirs = uploaded_file_id(client, other_auth)
    error = invalid_job(client, auth, settings, job_body(theirs), 400)
    assert error["param"] == "training_file" and error["code"] == "file_not_found"

    refused = upload(client, auth, jsonl([{"text": 5, "label": "a"}]))
    assert refused.status_code == 422
    (refused_file,) = client.get("/v1/files", headers=auth).json()["data"]
    error = invalid_job(client, auth, settings, job_body(refused_file["id"]), 400)
    assert error["param"] == "training_file" and error["code"] == "file_not_ready"
    assert "line 1" in error["message"]

    mine = uploaded_file_id(client, auth)
    error = invalid_job(client, auth, settings, job_body(mine, validation_file="file-missing"), 400)
    assert error["param"] == "validation_file" and error["code"] == "file_not_found"


def test_unreachable_broker_still_accepts_the_job(tmp_path: Any, tiny_bert_dir: Any) -> None:
    # Port 1 on loopback refuses connections: the broker is down.
    settings = Settings(
        data_dir=tmp_path, model_dirs=[tiny_bert_dir.parent], broker_url="redis://127.0.0.1:1/0"
    )
    upgrade_to_head(settings.database_url)
    app = create_app(settings)
    from tests.service.conftest import key_headers

    auth = key_headers(app, "alice")
    with TestClient(app) as client:
        response = client.post("/v1/jobs", headers=auth, json=job_body(uploaded_file_id(client, auth)))
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "queued"


def test_unknown_and_other_owners_jobs_are_404(
    app: FastAPI, client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    job_id = create_job(client, auth)["id"]
    for method, suffix in (
        ("GET", ""),
        ("POST", "/cancel"),
        ("GET", "/events"),
        ("GET", "/artifacts"),
        ("GET", "/artifacts.tar.gz"),
        ("GET", "/artifacts/adapter_config.json"),
    ):
        unknown = client.request(method, f"/v1/jobs/ftjob-unknown{suffix}", headers=auth)
        theirs = client.request(method, f"/v1/jobs/{job_id}{suffix}", headers=other_auth)
        assert unknown.status_code == theirs.status_code == 404, (suffix, theirs.text)
        assert unknown.json()["error"]["code"] == theirs.json()["error"]["code"] == "job_not_found"
    assert client.get("/v1/jobs", headers=other_auth).json()["data"] == []
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "queued"


def test_jobs_paginate_newest_first(client: TestClient, auth: dict[str, str]) -> None:
    training = uploaded_file_id(client, auth)
    ids = [client.post("/v1/jobs", headers=auth, json=job_body(training)).json()["id"] for _ in range(5)]
    newest_first = ids[::-1]
    seen, after, pages = [], None, 0
    while True:
        query = "?limit=2" + (f"&after={after}" if after else "")
        page = client.get(f"/v1/jobs{query}", headers=auth).json()
        seen += [job["id"] for job in page["data"]]
        pages += 1
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == newest_first and pages == 3
    assert [j["id"] for j in client.get("/v1/jobs", headers=auth).json()["data"]] == newest_first
    assert client.get("/v1/jobs?limit=101", headers=auth).status_code == 422
    bad_cursor = client.get("/v1/jobs?after=ftjob-nope", headers=auth)
    assert bad_cursor.status_code == 400 and bad_cursor.json()["error"]["param"] == "after"


def test_cancel_of_a_queued_job_means_it_never_runs(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    job_id = create_job(client, auth)["id"]
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled" and response.json()["finished_at"] is not None
    # A worker's claim is `UPDATE ... WHERE status='queued'`: it must find nothing to claim now.
    from sqlalchemy import update

    from core.models import Job

    with app.state.sessionmaker() as session:
        claimed = session.execute(
            update(Job).where(Job.id == job_id, Job.status == "queued").values(status="running")
        )
        session.commit()
    assert claimed.rowcount == 0
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "cancelled"
    events = client.get(f"/v1/jobs/{job_id}/events", headers=auth).json()["data"]
    assert events[-1]["type"] == "status" and events[-1]["data"] == {"status": "cancelled"}
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


def test_cancel_of_a_running_job_asks_the_worker(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    job_id = create_job(client, auth)["id"]
    set_job(app, job_id, status="running")
    job = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).json()
    assert job["status"] == "running" and job["cancel_requested"] is True
    events = client.get(f"/v1/jobs/{job_id}/events", headers=auth).json()["data"]
    # A message, not a status event: the status is still running until the worker stops.
    assert [(e["type"], e["message"], e["data"]) for e in events] == [
        ("message", "Cancellation requested", {"cancel_requested": True})
    ]


@pytest.mark.parametrize("finished", ["succeeded", "failed", "cancelled"])
def test_cancel_of_a_finished_job_is_409(
    app: FastAPI, client: TestClient, auth: dict[str, str], finished: str
) -> None:
    job_id = create_job(client, auth)["id"]
    set_job(app, job_id, status=finished)
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert response.status_code == 409
    assert finished in response.json()["error"]["message"]
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == finished


def test_failed_job_shows_its_error(app: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    job_id = create_job(client, auth)["id"]
    set_job(
        app,
        job_id,
        status="failed",
        error_code="invalid_data",
        error_message="line 3: missing 'label'",
        error_param="training_file",
        progress=0.25,
        metrics={"train_loss": 0.7},
    )
    job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert job["error"] == {
        "code": "invalid_data",
        "message": "line 3: missing 'label'",
        "param": "training_file",
    }
    assert job["progress"] == 0.25 and job["metrics"] == {"train_loss": 0.7}


def test_events_are_oldest_first_and_paginate(app: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    job_id = create_job(client, auth)["id"]
    with app.state.sessionmaker() as session:
        for step in range(1, 6):
            session.add(JobEvent(job_id=job_id, type="metrics", message=f"step {step}", data={"step": step}))
        session.commit()
    first = client.get(f"/v1/jobs/{job_id}/events?limit=3", headers=auth).json()
    assert [e["data"]["step"] for e in first["data"]] == [1, 2, 3] and first["has_more"] is True
    assert first["data"][0]["object"] == "fine_tuning.job.event" and first["data"][0]["type"] == "metrics"
    after = first["data"][-1]["id"]
    rest = client.get(f"/v1/jobs/{job_id}/events?limit=3&after={after}", headers=auth).json()
    assert [e["data"]["step"] for e in rest["data"]] == [4, 5] and rest["has_more"] is False
    bad = client.get(f"/v1/jobs/{job_id}/events?after=latest", headers=auth)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "after"


def test_oversized_job_body_is_413(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    body = job_body(uploaded_file_id(client, auth), metadata={"notes": "x" * 300_000})
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 413, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert broker_messages(settings) == []


def test_oversized_chunked_job_body_is_413(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    def chunks() -> Iterator[bytes]:
        # No Content-Length: only counting the chunks as they come can stop this body.
        yield b'{"base_model": "tiny-bert", "training_file": "file-x", "metadata": {"notes": "'
        for _ in range(400):
            yield b"x" * 1024
        yield b'"}}'

    headers = {**auth, "Content-Type": "application/json"}
    response = client.post("/v1/jobs", headers=headers, content=chunks())
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"
    assert broker_messages(settings) == []
