"""/v1/transferability: create (validated, committed, then enqueued), list, get, owner scoping."""

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.models import TransferabilityRun
from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from tests.service.conftest import key_headers
from tests.service.helpers import broker_messages, jsonl, statuses_when_sent, upload, uploaded_file_id
from tuning.models import BUNDLED_MODEL_ID

URL = "/v1/transferability"


def body(training_file: str, **overrides: Any) -> dict[str, Any]:
    return {"training_file": training_file, "base_models": ["tiny-bert", BUNDLED_MODEL_ID]} | overrides


def create_run(client: TestClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = client.post(URL, headers=headers, json=body(uploaded_file_id(client, headers), **overrides))
    assert response.status_code == 201, response.text
    return dict(response.json())


def set_run(app: FastAPI, run_id: str, **values: Any) -> None:
    """Change a run row the way a worker would."""
    with app.state.sessionmaker() as session:
        run = session.get(TransferabilityRun, run_id)
        assert run is not None
        for name, value in values.items():
            setattr(run, name, value)
        session.commit()


def test_create_commits_then_enqueues_the_run(
    app: FastAPI,
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    training = uploaded_file_id(client, auth)
    seen_by_a_worker = statuses_when_sent(app, monkeypatch, TransferabilityRun)
    response = client.post(URL, headers=auth, json=body(training))
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["object"] == "transferability.run" and run["id"].startswith("tfrun-")
    assert run["status"] == "queued" and run["training_file"] == training
    assert run["base_models"] == ["tiny-bert", BUNDLED_MODEL_ID]
    assert run["task"] == "sequence_classification" and run["max_examples"] == 1000
    assert run["results"] == [] and run["error"] is None
    assert run["started_at"] is None and run["finished_at"] is None and run["seconds"] is None
    assert seen_by_a_worker == ["queued"]  # committed before the message left
    assert broker_messages(settings) == [
        {"task": "deltatune.score_transferability", "args": [run["id"]], "queue": "cpu"}
    ]
    assert client.get(f"{URL}/{run['id']}", headers=auth).json() == run


def refused(
    client: TestClient, auth: dict[str, str], settings: Settings, request: Any, status: int
) -> dict[str, Any]:
    response = client.post(URL, headers=auth, json=request)
    assert response.status_code == status, response.text
    assert broker_messages(settings) == [], "nothing may be enqueued for a refused run"
    assert client.get(URL, headers=auth).json()["data"] == []
    return dict(response.json()["error"])


def test_an_unknown_candidate_is_named_by_its_index(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    request = body(uploaded_file_id(client, auth), base_models=["tiny-bert", "gpt-17"])
    error = refused(client, auth, settings, request, 400)
    assert error["param"] == "base_models[1]" and error["code"] == "model_not_found"
    assert error["message"].startswith("base_models[1]: ") and "'gpt-17'" in error["message"]
    assert "tiny-bert" in error["message"], "the known models are listed"


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"base_models": []}, "base_models", "too_short"),
        ({"base_models": [f"m{i}" for i in range(9)]}, "base_models", "too_long"),
        ({"base_models": ["tiny-bert", "tiny-bert"]}, "base_models", "value_error"),
        ({"task": "regression"}, "task", "literal_error"),
        ({"max_examples": 1}, "max_examples", "greater_than_equal"),
        ({"max_examples": "many"}, "max_examples", "int_parsing"),
        ({"candidates": ["tiny-bert"]}, "candidates", "extra_forbidden"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    change: dict[str, Any],
    param: str,
    code: str,
) -> None:
    error = refused(client, auth, settings, body(uploaded_file_id(client, auth), **change), 422)
    assert error["param"] == param and error["code"] == code
    assert error["message"].startswith(f"{param}:")


def test_missing_training_file_field_is_422(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    error = refused(client, auth, settings, {"base_models": ["tiny-bert"]}, 422)
    assert error["param"] == "training_file" and error["code"] == "missing"


def test_training_file_must_be_owned_and_processed(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], settings: Settings
) -> None:
    error = refused(client, auth, settings, body("file-missing"), 400)
    assert error["param"] == "training_file" and error["code"] == "file_not_found"

    theirs = uploaded_file_id(client, other_auth)
    error = refused(client, auth, settings, body(theirs), 400)
    assert error["param"] == "training_file" and error["code"] == "file_not_found"

    assert upload(client, auth, jsonl([{"text": 5, "label": "a"}])).status_code == 422
    (bad_file,) = client.get("/v1/files", headers=auth).json()["data"]
    error = refused(client, auth, settings, body(bad_file["id"]), 400)
    assert error["param"] == "training_file" and error["code"] == "file_not_ready"
    assert "line 1" in error["message"]


def test_requests_need_an_api_key(client: TestClient) -> None:
    for response in (client.get(URL), client.post(URL, json=body("file-x")), client.get(f"{URL}/tfrun-x")):
        assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"


def test_unknown_and_other_owners_runs_are_404(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    run_id = create_run(client, auth)["id"]
    unknown = client.get(f"{URL}/tfrun-unknown", headers=auth)
    theirs = client.get(f"{URL}/{run_id}", headers=other_auth)
    assert unknown.status_code == theirs.status_code == 404
    for error in (unknown.json()["error"], theirs.json()["error"]):
        assert error["code"] == "run_not_found" and error["param"] == "run_id"
    assert client.get(URL, headers=other_auth).json() == {"object": "list", "data": [], "has_more": False}
    bad_cursor = client.get(f"{URL}?after={run_id}", headers=other_auth)
    assert bad_cursor.status_code == 400 and bad_cursor.json()["error"]["code"] == "invalid_cursor"


def test_runs_paginate_newest_first(client: TestClient, auth: dict[str, str]) -> None:
    training = uploaded_file_id(client, auth)
    ids = [client.post(URL, headers=auth, json=body(training)).json()["id"] for _ in range(5)]
    seen, after, pages = [], None, 0
    while True:
        page = client.get(URL, headers=auth, params={"limit": 2} | ({"after": after} if after else {})).json()
        seen += [run["id"] for run in page["data"]]
        pages += 1
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == ids[::-1] and pages == 3
    assert client.get(URL, headers=auth, params={"limit": 101}).status_code == 422


def test_a_finished_run_shows_its_ranked_scores_and_timings(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    run_id = create_run(client, auth)["id"]
    started = datetime(2026, 5, 10, 12, 0, 0)
    results = [
        {
            "model": BUNDLED_MODEL_ID,
            "rank": 1,
            "score": "logme",
            "value": -0.5,
            "higher_is_better": True,
            "seconds": 1.5,
            "examples": 4,
            "feature_dim": 384,
        },
        {
            "model": "tiny-bert",
            "rank": 2,
            "score": "logme",
            "value": -0.9,
            "higher_is_better": True,
            "seconds": 0.2,
            "examples": 4,
            "feature_dim": 32,
        },
    ]
    finished = started + timedelta(seconds=2.5)
    set_run(app, run_id, status="succeeded", started_at=started, finished_at=finished, results=results)
    run = client.get(f"{URL}/{run_id}", headers=auth).json()
    assert run["status"] == "succeeded" and run["seconds"] == 2.5 and run["error"] is None
    assert run["finished_at"] - run["started_at"] == 2
    assert [(r["model"], r["rank"], r["value"]) for r in run["results"]] == [
        (BUNDLED_MODEL_ID, 1, -0.5),
        ("tiny-bert", 2, -0.9),
    ]
    assert run["results"][0]["feature_dim"] == 384 and run["results"][0]["error"] is None
    assert client.get(URL, headers=auth).json()["data"] == [run]


def test_a_failed_run_shows_its_error(app: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    run_id = create_run(client, auth)["id"]
    set_run(app, run_id, status="failed", error_code="invalid_data", error_message="line 3: missing 'label'")
    run = client.get(f"{URL}/{run_id}", headers=auth).json()
    assert run["status"] == "failed" and run["results"] == []
    assert run["error"] == {"code": "invalid_data", "message": "line 3: missing 'label'"}


def test_unreachable_broker_still_accepts_the_run(tmp_path: Path, tiny_bert_dir: Path) -> None:
    # Port 1 on loopback refuses connections: the broker is down.
    settings = Settings(
        data_dir=tmp_path, model_dirs=[tiny_bert_dir.parent], broker_url="redis://127.0.0.1:1/0"
    )
    upgrade_to_head(settings.database_url)
    app = create_app(settings)
    auth = key_headers(app, "alice")
    with TestClient(app) as client:
        response = client.post(URL, headers=auth, json=body(uploaded_file_id(client, auth)))
        assert response.status_code == 201, response.text
        assert client.get(f"{URL}/{response.json()['id']}", headers=auth).json()["status"] == "queued"


def test_the_openapi_document_describes_the_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths[URL]) == {"get", "post"} and set(paths[URL + "/{run_id}"]) == {"get"}


def test_a_run_scored_by_the_worker_reads_back_ranked(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    from worker.transferability import score_run  # the worker side: torch only for this test

    run_id = create_run(client, auth)["id"]
    assert score_run(run_id, settings=settings, sessions=app.state.sessionmaker, worker="w1") == "succeeded"
    run = client.get(f"{URL}/{run_id}", headers=auth).json()
    assert run["status"] == "succeeded" and run["error"] is None and run["seconds"] >= 0
    assert {r["model"] for r in run["results"]} == {"tiny-bert", BUNDLED_MODEL_ID}
    assert [r["rank"] for r in run["results"]] == [1, 2]
    assert run["results"][0]["value"] >= run["results"][1]["value"]
    assert all(r["score"] == "logme" and r["examples"] == 4 for r in run["results"])
