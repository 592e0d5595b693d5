"""POST /v1/jobs validates every file with the base model's tokenizer before anything is queued: a file
that cannot train the job is a 422 naming the field and line, a good one's report is stored with the
job, and a dry run answers the report and the estimates without creating or queueing anything."""

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.models import Job, JobStatus
from core.settings import Settings
from service.worker_figures import settings_worker
from tests.service.helpers import broker_messages, job_body, jsonl, upload
from tuning.estimate import estimate_job
from tuning.models import resolve_base_model
from tuning.spec import JobRequest

TWO_LABELS = [{"text": "good movie", "label": "pos"}, {"text": "bad film", "label": "neg"}]
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
GPT2_LORA = {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["c_attn"]}


def file_id(client: TestClient, auth: dict[str, str], records: list[dict[str, Any]]) -> str:
    response = upload(client, auth, jsonl(records))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def assert_nothing_created(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    assert client.get("/v1/jobs", headers=auth).json()["data"] == []
    assert broker_messages(settings) == []


def test_a_job_stores_its_validation_report(client: TestClient, auth: dict[str, str]) -> None:
    training = file_id(client, auth, TWO_LABELS)
    response = client.post("/v1/jobs", headers=auth, json=job_body(training))
    assert response.status_code == 201, response.text
    job = client.get(f"/v1/jobs/{response.json()['id']}", headers=auth).json()
    report = job["validation"]["files"]["training_file"]
    assert report["id"] == training and report["format"] == "classification"
    assert report["tokens"] == {"min": 4, "mean": 4.0, "max": 4}  # [CLS] word word [SEP]
    assert report["labels"] == {"neg": 1, "pos": 1}


def test_validation_label_never_seen_in_training(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    training = file_id(client, auth, TWO_LABELS)
    validation = file_id(client, auth, [TWO_LABELS[0], {"text": "so so", "label": "meh"}])
    response = client.post("/v1/jobs", headers=auth, json=job_body(training, validation_file=validation))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "validation_file"
    assert error["message"].startswith("line 2:") and "'meh' never appears" in error["message"]
    assert_nothing_created(client, auth, settings)


@pytest.mark.parametrize(
    ("records", "overrides", "reason"),
    [
        (TWO_LABELS, {"task": "causal_lm"}, "task causal_lm reads text, prompt_completion, chat lines"),
        ([CHAT], {"task": "causal_lm"}, "chat data needs a chat template"),
    ],
    ids=["causal_lm-on-classification", "chat-without-template"],
)
def test_causal_lm_files_that_cannot_train(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    tiny_gpt2_dir: Path,
    records: list[dict[str, Any]],
    overrides: dict[str, Any],
    reason: str,
) -> None:
    training = file_id(client, auth, records)
    body = job_body(training, base_model="tiny-gpt2", method=GPT2_LORA, **overrides)
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "training_file"
    assert error["message"].startswith("line 1:") and reason in error["message"]
    assert_nothing_created(client, auth, settings)


def test_sequence_classification_on_a_chat_file(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    response = client.post("/v1/jobs", headers=auth, json=job_body(file_id(client, auth, [CHAT])))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "training_file"
    assert error["message"] == (
        "line 1: task sequence_classification reads classification, multi_label, regression lines; "
        "the training file is chat"
    )
    assert_nothing_created(client, auth, settings)


def test_chat_with_a_template_in_the_spec_is_accepted(
    client: TestClient, auth: dict[str, str], tiny_gpt2_dir: Path
) -> None:
    template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    body = job_body(
        file_id(client, auth, [CHAT]),
        base_model="tiny-gpt2",
        task="causal_lm",
        method=GPT2_LORA,
        data={"chat_template": template},
        dry_run=True,
    )
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 200, response.text
    report = response.json()["validation"]["files"]["training_file"]
    assert report["roles"] == {"assistant": 1, "user": 1} and report["tokens"]["max"] == 6


def test_dry_run_answers_exact_figures_and_creates_nothing(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    # Every word is one WordPiece; [CLS] and [SEP] make 4, 4, 5 and 4 tokens.
    records = [
        {"text": "good movie", "label": "pos"},
        {"text": "bad film", "label": "neg"},
        {"text": "good good good", "label": "pos"},
        {"text": "bad bad", "label": "neg"},
    ]
    body = job_body(file_id(client, auth, records), dry_run=True)
    body["hyperparameters"] = {"epochs": 2, "batch_size": 3}
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "fine_tuning.job.dry_run"
    report = answer["validation"]["files"]["training_file"]
    assert report["tokens"] == {"min": 4, "mean": 4.25, "max": 5} and report["trained_tokens"] == 17
    assert report["over_max_seq_length"] == {"count": 0, "action": "truncated to 128 tokens"}
    assert answer["steps"] == 2 * 2 and answer["tokens"] == 2 * 17
    # tiny BERT: 999,072 parameters; LoRA r=4 on query and value of 2 layers: 2·2·4·(32+32) = 1,024,
    # and the new head for 2 labels: 32·2 + 2 = 66, as the job's own count has it.
    trainable = 1_024 + 66
    assert (answer["parameters"], answer["trainable_parameters"]) == (999_072, trainable)
    # The figures of the worker class in the settings, uncalibrated (no job has finished yet, and no
    # worker published its own).
    report = answer["validation"]
    spec = JobRequest.model_validate(body).job_spec()
    base_path = resolve_base_model(spec.base_model, settings.model_dirs)
    expected = estimate_job(spec, base_path, report, worker=settings_worker(settings))
    assert answer["estimated_seconds"] == pytest.approx(expected.seconds)
    assert answer["estimated_peak_memory_bytes"] == expected.peak_memory_bytes
    # The report's batches: lengths 4, 4, 5, 4 in batches of 3 (padded to their longest) and 1.
    assert report["files"]["training_file"]["batches"]["count"] == 2
    assert "safetensors" in answer["estimate_method"]
    assert answer["worker_figures_source"] == "defaults"
    assert_nothing_created(client, auth, settings)


def test_finished_jobs_calibrate_the_dry_runs_time(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    body = job_body(file_id(client, auth, TWO_LABELS))
    created = client.post("/v1/jobs", headers=auth, json=body).json()
    stored = created["validation"]["estimate"]
    flops_only = client.post("/v1/jobs", headers=auth, json=body | {"dry_run": True}).json()
    assert flops_only["estimated_seconds"] == pytest.approx(stored["seconds"], abs=1e-3)
    assert "calibration" not in flops_only["estimate_method"]
    # The job finishes having taken 3× its estimate, as a worker would record it.
    with app.state.sessionmaker() as session:
        job = session.get(Job, created["id"])
        assert job is not None
        job.status, job.metrics = JobStatus.SUCCEEDED, {"train_seconds": 3 * stored["seconds"]}
        session.commit()
    calibrated = client.post("/v1/jobs", headers=auth, json=body | {"dry_run": True}).json()
    assert calibrated["estimated_seconds"] == pytest.approx(3 * stored["seconds"], rel=1e-3)
    assert "× 3.00" in calibrated["estimate_method"]


def test_a_job_too_big_for_its_worker_class_is_refused_before_it_is_queued(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    body = job_body(file_id(client, auth, TWO_LABELS))
    dry = client.post("/v1/jobs", headers=auth, json=body | {"dry_run": True}).json()
    assert dry["fits_worker"] is None and dry["worker_memory_bytes"] is None  # no limit configured
    peak = dry["estimated_peak_memory_bytes"]
    assert peak == sum(dry["estimated_peak_memory_parts"].values())

    settings.worker_memory_bytes = peak - 1
    dry = client.post("/v1/jobs", headers=auth, json=body | {"dry_run": True}).json()
    assert dry["fits_worker"] is False and dry["worker_memory_bytes"] == peak - 1
    refused = client.post("/v1/jobs", headers=auth, json=body)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert (error["param"], error["code"]) == ("hyperparameters", "job_exceeds_worker_memory")
    assert "gradient_checkpointing" in error["message"]
    assert_nothing_created(client, auth, settings)

    settings.worker_memory_bytes = peak
    assert client.post("/v1/jobs", headers=auth, json=body | {"dry_run": True}).json()["fits_worker"] is True
    assert client.post("/v1/jobs", headers=auth, json=body).status_code == 201


def test_more_processes_than_the_workers_give_a_job_is_refused_naming_the_field(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    settings.worker_max_processes_per_job = 2
    body = job_body(file_id(client, auth, TWO_LABELS))
    for dry_run in (True, False):
        refused = client.post(
            "/v1/jobs", headers=auth, json=body | {"resources": {"processes": 3}, "dry_run": dry_run}
        )
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert (error["param"], error["code"]) == ("resources.processes", "too_many_processes")
        assert "at most 2" in error["message"]
    assert_nothing_created(client, auth, settings)
    accepted = client.post("/v1/jobs", headers=auth, json=body | {"resources": {"processes": 2}})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["spec"]["resources"]["processes"] == 2


def test_a_dry_run_on_two_processes_reports_one_processs_memory(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    """Each of two processes holds half of every batch's activations, and DDP's copy of the gradients."""
    settings.worker_max_processes_per_job = 2
    body = job_body(file_id(client, auth, TWO_LABELS)) | {"dry_run": True}
    one = client.post("/v1/jobs", headers=auth, json=body).json()["estimated_peak_memory_parts"]
    two = client.post("/v1/jobs", headers=auth, json=body | {"resources": {"processes": 2}}).json()
    parts = two["estimated_peak_memory_parts"]
    assert parts["activations"] in (one["activations"] // 2, (one["activations"] + 1) // 2)
    assert parts["gradient_buckets"] > 0 and "gradient_buckets" not in one
    assert two["estimated_peak_memory_bytes"] == sum(parts.values())
