"""/v1/fine_tuning/jobs: OpenAI's shapes over deltatune's jobs, the create mapping, pagination, pause
and resume, result files and fine-tuned model names, and what careless or hostile clients send."""

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openai.types import Model
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from core.models import JobEvent
from core.settings import Settings
from core.storage import open_storage
from tests.service.helpers import broker_messages, create_job, jsonl, publish_artifact, set_job, upload
from tests.worker.jobs import claim
from tuning.checkpoints import Checkpoint
from worker.checkpoints import CheckpointPublisher

BASE = "/v1/fine_tuning/jobs"
# Every key of the SDK's FineTuningJob, required and optional.
JOB_KEYS = {
    "id",
    "object",
    "created_at",
    "error",
    "fine_tuned_model",
    "finished_at",
    "hyperparameters",
    "model",
    "organization_id",
    "result_files",
    "seed",
    "status",
    "trained_tokens",
    "training_file",
    "validation_file",
    "estimated_finish",
    "integrations",
    "metadata",
    "method",
    "spec",
}
CHAT = [
    {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "Say bye"}, {"role": "assistant", "content": "bye"}]},
]
PROMPTS = [{"prompt": "2+2=", "completion": "4"}, {"prompt": "3+3=", "completion": "6"}]


def file_id(client: TestClient, auth: dict[str, str], lines: list[dict[str, Any]] | None = None) -> str:
    response = upload(client, auth, None if lines is None else jsonl(lines))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def create(client: TestClient, auth: dict[str, str], **body: Any) -> Any:
    return client.post(BASE, headers=auth, json=body)


def created(client: TestClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    body.setdefault("model", "tiny-bert")
    body.setdefault("training_file", file_id(client, auth))
    response = create(client, auth, **body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_create_answers_openai_job_on_the_same_job(client: TestClient, auth: dict[str, str]) -> None:
    job = created(
        client, auth, method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    )
    assert set(job) == JOB_KEYS
    FineTuningJob.model_validate(job)  # the SDK's own type, strictly
    assert job["object"] == "fine_tuning.job" and job["status"] == "queued"
    assert job["model"] == "tiny-bert" and job["fine_tuned_model"] is None and job["result_files"] == []
    assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": 16, "learning_rate_multiplier": "auto"}
    assert job["method"] == {"type": "supervised", "supervised": {"hyperparameters": job["hyperparameters"]}}
    assert job["seed"] == 42 and job["trained_tokens"] is None and job["finished_at"] is None
    assert job["organization_id"].startswith("owner-")
    # The same row behind deltatune's own API, with OpenAI's checkpoints default.
    own = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert own["spec"]["hyperparameters"]["epochs"] == 2 and own["spec"]["method"]["type"] == "lora"
    assert own["spec"]["checkpoints"] == {"every_steps": None, "keep": 3}
    assert [job["id"]] == [m["args"][0] for m in broker_messages_of(client)]


def broker_messages_of(client: TestClient) -> list[dict[str, Any]]:
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    return broker_messages(settings)


def test_hyperparameters_map_auto_and_multiplier(client: TestClient, auth: dict[str, str]) -> None:
    job = created(
        client,
        auth,
        hyperparameters={"n_epochs": "auto", "batch_size": 4, "learning_rate_multiplier": 0.5},
        seed=7,
    )
    # "auto" stays "auto" until the job resolves it; the multiplier is times auto's rate for LoRA at
    # batch 4: 5e-4 (Hu et al.) × √(4/16) × 0.5.
    assert job["hyperparameters"] == {"n_epochs": "auto", "batch_size": 4, "learning_rate_multiplier": 0.5}
    assert job["spec"]["hyperparameters"]["learning_rate"] == pytest.approx(1.25e-4)
    assert job["seed"] == 7


def test_deltatune_parts_stand_beside_openai_fields(client: TestClient, auth: dict[str, str]) -> None:
    """What the SDK's extra_body sends: deltatune's own method, parts and hyperparameters."""
    job = created(
        client,
        auth,
        hyperparameters={"n_epochs": 1, "max_seq_length": 64},
        method={"type": "bitfit"},
        head={"type": "mlp", "hidden_size": 8},
        suffix="sentiment",
        metadata={"team": "a"},
    )
    assert job["spec"]["method"] == {"type": "bitfit"}
    assert job["spec"]["head"]["type"] == "mlp"
    assert job["spec"]["hyperparameters"]["max_seq_length"] == 64
    assert job["metadata"] == {"team": "a", "suffix": "sentiment"}


@pytest.mark.parametrize("lines", [CHAT, PROMPTS], ids=["chat", "prompt_completion"])
def test_openai_data_formats_train_a_language_model(
    client: TestClient, auth: dict[str, str], tiny_gpt2_dir: Path, lines: list[dict[str, Any]]
) -> None:
    job = created(client, auth, model="tiny-gpt2", training_file=file_id(client, auth, lines))
    assert job["spec"]["task"] == "causal_lm"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": "many"}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": 2.5}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": True}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"learning_rate_multiplier": -1}}, "hyperparameters.learning_rate_multiplier"),
        (
            {"hyperparameters": {"learning_rate_multiplier": "fast"}},
            "hyperparameters.learning_rate_multiplier",
        ),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 0}}}},
            "method.supervised.hyperparameters.batch_size",
        ),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"lr": 1}}}},
            "method.supervised.hyperparameters.lr",
        ),
        ({"hyperparameters": {"warmup_ratio": 3}}, "hyperparameters.warmup_ratio"),
        ({"hyperparameters": {"n_epochs": 2, "epochs": 2}}, "hyperparameters.n_epochs"),
        (
            {
                "hyperparameters": {"n_epochs": 1},
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
            },
            "hyperparameters",
        ),
        ({"method": {"type": "dpo", "dpo": {}}}, "method.type"),
        ({"method": {"type": "magic"}}, "method.type"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
        ({"suffix": "has:colon"}, "suffix"),
        ({"seed": -1}, "seed"),
        ({"temperature": 1}, "temperature"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"task": "causal_lm", "head": {"type": "mlp", "hidden_size": 8}}, "head"),
        ({"model": "ft:tiny-bert:alice::not-a-job"}, "model"),
        ({"model": "no-such-model"}, "model"),
    ],
)
def test_bad_requests_answer_400_naming_the_param(
    client: TestClient, auth: dict[str, str], body: dict[str, Any], param: str
) -> None:
    body = {"model": "tiny-bert", "training_file": file_id(client, auth)} | body
    response = create(client, auth, **body)
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert set(error) == {"message", "type", "param", "code"} and error["message"]


def test_unknown_files_and_models_are_named(client: TestClient, auth: dict[str, str]) -> None:
    response = create(client, auth, model="tiny-bert", training_file="file-nope")
    assert response.status_code == 400 and response.json()["error"]["param"] == "training_file"
    response = create(
        client, auth, model="ftjob-000000000000000000000000", training_file=file_id(client, auth)
    )
    assert response.status_code == 404 and response.json()["error"]["param"] == "model"


def test_list_pages_newest_first_with_after(client: TestClient, auth: dict[str, str]) -> None:
    ids = [created(client, auth)["id"] for _ in range(3)]
    first = client.get(BASE, headers=auth, params={"limit": 2}).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [job["id"] for job in first["data"]] == ids[::-1][:2]
    second = client.get(BASE, headers=auth, params={"limit": 2, "after": first["data"][-1]["id"]}).json()
    assert [job["id"] for job in second["data"]] == [ids[0]] and second["has_more"] is False
    for params in ({"limit": 0}, {"limit": 101}, {"after": "ftjob-unknown"}):
        response = client.get(BASE, headers=auth, params=params)
        assert response.status_code in (400, 422), response.text


def test_foreign_and_unknown_ids_answer_404(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    job = created(client, auth)
    for path in ("", "/events", "/checkpoints"):
        assert client.get(f"{BASE}/{job['id']}{path}", headers=other_auth).status_code == 404
    for action in ("cancel", "pause", "resume"):
        response = client.post(f"{BASE}/{job['id']}/{action}", headers=other_auth)
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
    assert client.get(f"{BASE}/ftjob-{'0' * 24}", headers=auth).status_code == 404
    assert client.get(BASE, headers=other_auth).json()["data"] == []


def test_events_newest_first_in_openai_words(app: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    job = created(client, auth)
    with app.state.sessionmaker() as session:
        session.add(JobEvent(job_id=job["id"], type="status", message="queued", data={"status": "queued"}))
        session.commit()
        session.add(JobEvent(job_id=job["id"], type="metrics", message="step 1", data={"step": 1}))
        session.add(
            JobEvent(job_id=job["id"], type="eval", message="eval", data={"step": 1}, level="warning")
        )
        session.commit()
    page = client.get(f"{BASE}/{job['id']}/events", headers=auth, params={"limit": 2}).json()
    assert page["has_more"] is True
    newest, older = page["data"]
    for event in page["data"]:
        FineTuningJobEvent.model_validate(event)
    assert newest["object"] == "fine_tuning.job.event" and newest["id"].startswith("ftevent-")
    assert (newest["type"], newest["level"]) == ("metrics", "warn")
    assert older["type"] == "metrics" and older["data"] == {"step": 1}
    rest = client.get(f"{BASE}/{job['id']}/events", headers=auth, params={"after": older["id"]}).json()
    assert [e["type"] for e in rest["data"]] == ["message"]  # a status event is a message
    assert rest["has_more"] is False
    for after in ("ftevent-x", "ftevent-", "1e3", "ftevent-" + "9" * 40):
        response = client.get(f"{BASE}/{job['id']}/events", headers=auth, params={"after": after})
        assert response.status_code == 400 and response.json()["error"]["param"] == "after"


def test_checkpoints_latest_first(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    job = created(client, auth)
    attempt = claim(app.state.sessionmaker, job["id"])
    publisher = CheckpointPublisher(attempt, storage=open_storage(settings))
    for step in (2, 4):
        folder = tmp_path / f"step-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"x" * step)
        publisher(
            Checkpoint(step, step / 4, {"val_loss": 1.0 / step}, folder, ["adapter_model.safetensors"]), []
        )
    attempt.write(
        lambda session: session.add(
            JobEvent(job_id=job["id"], type="metrics", message="m", data={"step": 4, "train_loss": 0.25})
        )
    )
    page = client.get(f"{BASE}/{job['id']}/checkpoints", headers=auth, params={"limit": 1}).json()
    (latest,) = page["data"]
    FineTuningJobCheckpoint.model_validate(latest)
    assert page["has_more"] is True and page["first_id"] == page["last_id"] == latest["id"]
    assert latest["object"] == "fine_tuning.job.checkpoint" and latest["step_number"] == 4
    assert latest["fine_tuning_job_id"] == job["id"]
    assert latest["fine_tuned_model_checkpoint"].endswith(f":{job['id']}:ckpt-step-4")
    assert latest["metrics"]["valid_loss"] == 0.25 and latest["metrics"]["train_loss"] == 0.25
    rest = client.get(f"{BASE}/{job['id']}/checkpoints", headers=auth, params={"after": latest["id"]}).json()
    assert [c["step_number"] for c in rest["data"]] == [2] and rest["has_more"] is False
    response = client.get(f"{BASE}/{job['id']}/checkpoints", headers=auth, params={"after": "ckpt-nope"})
    assert response.status_code == 400


def test_succeeded_job_has_result_csv_and_a_usable_model(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    job = created(client, auth, suffix="v1")
    with app.state.sessionmaker() as session:
        session.add(
            JobEvent(job_id=job["id"], type="metrics", message="m", data={"step": 2, "train_loss": 0.5})
        )
        session.add(
            JobEvent(
                job_id=job["id"],
                type="eval",
                message="e",
                data={"step": 2, "val_loss": 0.4, "val_accuracy": 1},
            )
        )
        session.commit()
    publish_artifact(app, settings, job["id"], {"adapter_model.safetensors": b"w"})
    done = client.get(f"{BASE}/{job['id']}", headers=auth).json()
    assert done["status"] == "succeeded" and done["finished_at"] is not None
    FineTuningJob.model_validate(done)
    assert done["fine_tuned_model"] == f"ft:tiny-bert:alice:v1:{job['id']}"
    (result_id,) = done["result_files"]
    assert client.get(f"{BASE}/{job['id']}", headers=auth).json()["result_files"] == [result_id]  # one file
    file = client.get(f"/v1/files/{result_id}", headers=auth).json()
    assert file["purpose"] == "fine-tune-results" and file["status"] == "processed"
    content = client.get(f"/v1/files/{result_id}/content", headers=auth).text
    rows = list(csv.DictReader(io.StringIO(content)))
    assert rows == [
        {
            "step": "2",
            "epoch": "",
            "train_loss": "0.5",
            "learning_rate": "",
            "valid_loss": "0.4",
            "valid_accuracy": "1",
        }
    ]
    # The fine-tuned model: GET /v1/models/{id} knows it, and a later job starts from it.
    model = client.get(f"/v1/models/{done['fine_tuned_model']}", headers=auth).json()
    assert model["id"] == done["fine_tuned_model"] and model["owned_by"] == done["organization_id"]
    Model.model_validate(model)
    later = created(client, auth, model=done["fine_tuned_model"])
    assert later["model"] == job["id"]


def test_models_retrieve(client: TestClient, auth: dict[str, str], other_auth: dict[str, str]) -> None:
    model = client.get("/v1/models/tiny-bert", headers=auth).json()
    assert model["object"] == "model" and model["owned_by"] == "system" and model["created"] > 0
    bundled = client.get("/v1/models/sentence-transformers/all-MiniLM-L6-v2", headers=auth)
    assert bundled.status_code == 200 and bundled.json()["source"] == "bundled"
    for name in ("nope", "ft:tiny-bert:x::ftjob-" + "0" * 24, "ftjob-" + "0" * 24):
        response = client.get(f"/v1/models/{name}", headers=auth)
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_pause_a_queued_job_at_once_and_resume(client: TestClient, auth: dict[str, str]) -> None:
    job = created(client, auth)
    paused = client.post(f"{BASE}/{job['id']}/pause", headers=auth).json()
    assert paused["status"] == "paused"
    assert client.post(f"{BASE}/{job['id']}/pause", headers=auth).json()["status"] == "paused"  # no-op
    before = len(broker_messages_of(client))
    resumed = client.post(f"{BASE}/{job['id']}/resume", headers=auth)
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    assert len(broker_messages_of(client)) == before + 1  # sent again
    response = client.post(f"{BASE}/{job['id']}/resume", headers=auth)
    assert response.status_code == 409 and "only a paused job" in response.json()["error"]["message"]


def test_pause_of_a_running_job_is_a_request(app: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    job = create_job(client, auth)
    claim(app.state.sessionmaker, job["id"])
    asked = client.post(f"/v1/jobs/{job['id']}/pause", headers=auth).json()
    assert asked["status"] == "running" and asked["pause_requested"] is True
    response = client.post(f"/v1/jobs/{job['id']}/resume", headers=auth)
    assert response.status_code == 409 and "once its status is paused" in response.json()["error"]["message"]
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()["data"]
    assert [e["message"] for e in events].count("Pause requested") == 1
    client.post(f"/v1/jobs/{job['id']}/pause", headers=auth)  # asked twice: one event
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()["data"]
    assert [e["message"] for e in events].count("Pause requested") == 1


def test_cancel_of_a_paused_job_and_pause_of_a_finished_one(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    job = created(client, auth)
    client.post(f"{BASE}/{job['id']}/pause", headers=auth)
    cancelled = client.post(f"{BASE}/{job['id']}/cancel", headers=auth).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    for action in ("pause", "resume"):
        response = client.post(f"{BASE}/{job['id']}/{action}", headers=auth)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["type"] == "conflict_error"
    message = client.post(f"{BASE}/{job['id']}/pause", headers=auth).json()["error"]["message"]
    assert message == f"job {job['id']!r} already cancelled; it cannot be paused"
    being_cancelled = create_job(client, auth)
    set_job(app, being_cancelled["id"], status="running", cancel_requested=True)
    response = client.post(f"/v1/jobs/{being_cancelled['id']}/pause", headers=auth)
    assert response.status_code == 409 and response.json()["error"]["code"] == "job_cancelling"
