"""A finished job's model as base_model: which jobs qualify, and what the stored spec becomes."""

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.service.helpers import broker_messages, create_job, job_body, set_job, uploaded_file_id


def finished_job(
    app: FastAPI, client: TestClient, headers: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    job = create_job(client, headers, **overrides)
    set_job(app, job["id"], status="succeeded")
    return job


def post_on(client: TestClient, headers: dict[str, str], base_model: str, **overrides: Any) -> Any:
    body = job_body(uploaded_file_id(client, headers), base_model=base_model, **overrides)
    return client.post("/v1/jobs", headers=headers, json=body)


def test_a_job_on_a_succeeded_job_is_queued(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    source = finished_job(app, client, auth)
    response = post_on(client, auth, source["id"])
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["base_model"] == source["id"] and job["spec"]["base_model"] == source["id"]
    assert job["id"] in [message["args"][0] for message in broker_messages(settings)]


def test_a_chain_of_jobs_is_accepted(app: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    first = finished_job(app, client, auth, method={"type": "full"})
    second = finished_job(app, client, auth, base_model=first["id"], method={"type": "bitfit"})
    response = post_on(client, auth, second["id"])
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
def test_an_unfinished_or_failed_job_is_refused(
    app: FastAPI, client: TestClient, auth: dict[str, str], status: str
) -> None:
    source = create_job(client, auth)
    set_job(app, source["id"], status=status)
    response = post_on(client, auth, source["id"])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "base_model" and error["code"] == "invalid_base_model"
    assert status in error["message"] and "succeeded" in error["message"]


def test_another_owners_job_is_not_found(
    app: FastAPI, client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    source = finished_job(app, client, auth)
    response = post_on(client, other_auth, source["id"])
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "base_model"


def test_a_job_whose_method_cannot_merge_is_refused(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    source = finished_job(app, client, auth, method={"type": "prompt_tuning", "num_virtual_tokens": 4})
    response = post_on(client, auth, source["id"])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "base_model" and "'prompt_tuning'" in error["message"]
    assert "not a plain model" in error["message"]


def test_a_model_of_another_task_is_refused(
    app: FastAPI, client: TestClient, auth: dict[str, str], tiny_gpt2_dir: object
) -> None:
    source = finished_job(app, client, auth, base_model="tiny-gpt2", method={"type": "full"})
    lm_lines = b'{"text": "once upon a time there was a tiny model"}\n' * 4
    training = client.post(
        "/v1/files",
        headers=auth,
        files={"file": ("lm.jsonl", lm_lines, "application/jsonl")},
        data={"purpose": "fine-tune"},
    )
    assert training.status_code == 201, training.text
    body = job_body(training.json()["id"], base_model=source["id"], task="causal_lm", method={"type": "full"})
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "base_model" and "sequence_classification model" in error["message"]


def test_ewc_defaults_to_the_source_jobs_training_file(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    source = finished_job(app, client, auth, method={"type": "full"})
    response = post_on(
        client, auth, source["id"], method={"type": "full"}, regularizers={"ewc": {"weight": 2}}
    )
    assert response.status_code == 201, response.text
    ewc = response.json()["spec"]["regularizers"]["ewc"]
    assert ewc["weight"] == 2.0 and ewc["fisher_file"] == source["training_file"]


def test_ewc_keeps_a_fisher_file_given_explicitly(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    source = finished_job(app, client, auth, method={"type": "full"})
    fisher = uploaded_file_id(client, auth)
    response = post_on(
        client,
        auth,
        source["id"],
        method={"type": "full"},
        regularizers={"ewc": {"weight": 2, "fisher_file": fisher}},
    )
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["regularizers"]["ewc"]["fisher_file"] == fisher
