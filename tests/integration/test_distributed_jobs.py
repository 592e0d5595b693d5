"""Jobs through the distributed setup: PostgreSQL, Redis, a real Celery worker process, the API."""

import json
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import tuning
from core.dispatch import RUN_JOB_TASK
from tests.integration.api_client import (
    archive_members,
    create_job,
    download_artifact,
    events,
    finished,
    upload,
    wait_for_job,
)
from tests.integration.conftest import Stack
from tests.worker.jobs import sentiment_lines

pytestmark = pytest.mark.integration


def job_spec(training: str, validation: str, **hyperparameters: Any) -> dict[str, Any]:
    return {
        "base_model": "tiny-bert",
        "training_file": training,
        "validation_file": validation,
        "method": {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
        "hyperparameters": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-2, "logging_steps": 2}
        | hyperparameters,
    }


def upload_pair(stack: Stack, *, validation: list[str] | None = None) -> tuple[str, str]:
    training_id = upload(stack.client, sentiment_lines(32, seed=1), filename="train.jsonl")
    validation_id = upload(
        stack.client, validation or sentiment_lines(16, seed=2), filename="validation.jsonl"
    )
    return training_id, validation_id


def job_ids(stack: Stack) -> list[str]:
    return [job["id"] for job in stack.client.get("/v1/jobs", params={"limit": 100}).json()["data"]]


def status_events(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    return [event for event in events(stack.client, job_id) if event["type"] == "status"]


def peft_predictions(base_dir: Path, adapter_dir: Path, texts: list[str], num_labels: int) -> torch.Tensor:
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    inputs = AutoTokenizer.from_pretrained(base_dir)(
        texts, padding=True, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits


def test_a_job_runs_from_upload_to_a_downloaded_adapter_peft_loads(stack: Stack, tmp_path: Path) -> None:
    validation = sentiment_lines(16, seed=2)
    training_id, validation_id = upload_pair(stack, validation=validation)
    job = create_job(stack.client, job_spec(training_id, validation_id))
    assert job["status"] == "queued"

    job = wait_for_job(stack.client, job["id"], finished, timeout=180, what="finished", log=stack.worker.log)
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["examples_seen"] == 64

    adapter_dir = tmp_path / "adapter"
    listing = download_artifact(stack.client, job["id"], adapter_dir)
    names = {artifact["name"] for artifact in listing["data"]}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert set(archive_members(stack.client, listing["archive_url"])) == names

    manifest = json.loads((adapter_dir / "deltatune.json").read_text())
    texts = [json.loads(line)["text"] for line in validation]
    theirs = peft_predictions(stack.models_root / "tiny-bert", adapter_dir, texts, len(manifest["labels"]))
    ours = tuning.predict_logits(tuning.load_artifact(adapter_dir, [stack.models_root]), texts)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
    labels = [manifest["labels"][str(index)] for index in range(len(manifest["labels"]))]
    expected = [json.loads(line)["label"] for line in validation]
    accuracy = sum(labels[i] == label for i, label in zip(theirs.argmax(-1).tolist(), expected, strict=True))
    assert accuracy / len(expected) == pytest.approx(job["metrics"]["val_accuracy"])

    kinds = {event["type"] for event in events(stack.client, job["id"])}
    assert {"status", "message", "metrics", "eval"} <= kinds


def test_a_running_job_is_cancelled_and_publishes_nothing(stack: Stack) -> None:
    training_id, validation_id = upload_pair(stack)
    job = create_job(stack.client, job_spec(training_id, validation_id, epochs=400, logging_steps=1))
    wait_for_job(
        stack.client,
        job["id"],
        lambda j: j["status"] == "running" and j["progress"] > 0,
        timeout=120,
        what="training",
        log=stack.worker.log,
    )

    response = stack.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text

    job = wait_for_job(stack.client, job["id"], finished, timeout=60, what="finished", log=stack.worker.log)
    assert job["status"] == "cancelled"
    assert job["progress"] < 0.1  # stopped within a few steps, not trained to the end
    assert job["artifacts"] == []
    assert stack.client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"] == []
    assert not (stack.settings.artifacts_dir / job["id"]).exists()
    assert status_events(stack, job["id"])[-1]["data"]["status"] == "cancelled"


def training_processes(job_id: str) -> list[psutil.Process]:
    """The job's torchrun and its training processes, wherever they are (the worker's pool starts them)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "tuning.distributed" in cmdline and job_id in cmdline:
            found.append(process)
    return found


@pytest.mark.timeout(150)
def test_a_job_on_two_processes_trains_under_the_worker_and_a_cancel_stops_them_all(stack: Stack) -> None:
    training_id, validation_id = upload_pair(stack)
    spec = job_spec(training_id, validation_id, epochs=400, logging_steps=1) | {"resources": {"processes": 2}}
    job = create_job(stack.client, spec)
    wait_for_job(
        stack.client,
        job["id"],
        lambda j: j["status"] == "running" and j["progress"] > 0,
        timeout=120,
        what="training",
        log=stack.worker.log,
    )
    assert len(training_processes(job["id"])) == 3  # torchrun and its 2 ranks

    response = stack.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    job = wait_for_job(stack.client, job["id"], finished, timeout=60, what="finished", log=stack.worker.log)
    assert job["status"] == "cancelled"
    assert job["progress"] < 0.1
    assert job["artifacts"] == []
    assert training_processes(job["id"]) == []  # every rank stopped, none left behind


def test_bad_data_is_refused_before_anything_is_queued(stack: Stack) -> None:
    # Validation has a label training never shows: the job could not evaluate what it cannot predict.
    validation = sentiment_lines(9, seed=3, labels=("positive", "negative", "neutral"))
    training_id, validation_id = upload_pair(stack, validation=validation)
    jobs_before = job_ids(stack)
    response = stack.client.post("/v1/jobs", json=job_spec(training_id, validation_id))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("validation_file", "invalid_data")
    assert error["message"].startswith("line ") and "neutral" in error["message"]
    # The stack is shared by this module's tests: no job beyond the earlier tests' ones.
    assert job_ids(stack) == jobs_before


def test_a_job_that_fails_on_the_worker_says_why(stack: Stack) -> None:
    training_id, validation_id = upload_pair(stack)
    source = create_job(stack.client, job_spec(training_id, validation_id, epochs=1) | {"checkpoints": {}})
    source = wait_for_job(
        stack.client, source["id"], finished, timeout=120, what="finished", log=stack.worker.log
    )
    assert source["status"] == "succeeded", source["error"]
    (checkpoint,) = stack.client.get(f"/v1/jobs/{source['id']}/checkpoints").json()["data"]
    # Same base model, method and head, so the API accepts it; only the worker, loading the
    # checkpoint, sees that its head was trained for two labels and this data has three.
    three = upload(
        stack.client,
        sentiment_lines(24, seed=4, labels=("positive", "negative", "neutral")),
        filename="three.jsonl",
    )
    job = create_job(
        stack.client,
        job_spec(three, validation_id) | {"validation_file": None, "from_checkpoint": checkpoint["id"]},
    )

    job = wait_for_job(stack.client, job["id"], finished, timeout=120, what="finished", log=stack.worker.log)

    assert job["status"] == "failed"
    assert job["error"]["param"] == "from_checkpoint"
    assert "label" in job["error"]["message"]
    assert job["artifacts"] == []
    assert status_events(stack, job["id"])[-1]["data"] == {
        "status": "failed",
        "code": job["error"]["code"],
        "param": "from_checkpoint",
    }


def test_two_deliveries_of_one_job_run_it_once(stack: Stack) -> None:
    training_id, validation_id = upload_pair(stack)
    job = create_job(stack.client, job_spec(training_id, validation_id, epochs=1))
    # The API sent run_job once; a broker redelivery or a re-send at worker start is a second one.
    stack.client.app.state.celery.send_task(RUN_JOB_TASK, args=[job["id"]], queue="cpu")  # type: ignore[attr-defined]

    job = wait_for_job(stack.client, job["id"], finished, timeout=180, what="finished", log=stack.worker.log)
    assert job["status"] == "succeeded", job["error"]
    duplicate_seen = f"job {job['id']} was not queued"
    wait_for_job(
        stack.client,
        job["id"],
        lambda _: duplicate_seen in stack.worker.log(),
        timeout=60,
        what="seen twice by the worker",
        log=stack.worker.log,
    )
    assert stack.worker.log().count(duplicate_seen) == 1  # each send is delivered once, to one queue

    claims = [event for event in status_events(stack, job["id"]) if event["data"]["status"] == "running"]
    assert len(claims) == 1
    published = stack.settings.artifacts_dir / job["id"] / "attempt-1"  # the one attempt that ran
    assert [path.name for path in published.parent.iterdir()] == ["attempt-1"]
    assert sorted(path.name for path in published.iterdir()) == sorted(a["name"] for a in job["artifacts"])
    assert [path.name for path in stack.settings.artifacts_dir.iterdir() if job["id"] in path.name] == [
        job["id"]
    ]
