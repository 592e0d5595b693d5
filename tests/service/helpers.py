"""Shared test helpers: JSONL bodies, uploads, rows written directly, broker messages decoded."""

import base64
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.models import Artifact, Job
from core.settings import Settings

GOOD_LINES = [
    {"text": "a delightful, warm little film", "label": "positive"},
    {"text": "dull and far too long", "label": "negative"},
    {"text": "I would watch it again tomorrow", "label": "positive"},
    {"text": "the plot falls apart halfway", "label": "negative"},
]


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def upload(
    client: TestClient,
    headers: dict[str, str],
    content: bytes | None = None,
    *,
    filename: str = "train.jsonl",
    purpose: str = "fine-tune",
) -> Any:
    """The response of POST /v1/files (an httpx Response; the test client's httpx flavour varies)."""
    return client.post(
        "/v1/files",
        headers=headers,
        files={"file": (filename, jsonl(GOOD_LINES) if content is None else content, "application/jsonl")},
        data={"purpose": purpose},
    )


def uploaded_file_id(client: TestClient, headers: dict[str, str]) -> str:
    response = upload(client, headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def job_body(training_file: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "base_model": "tiny-bert",
        "training_file": training_file,
        "method": {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
        "hyperparameters": {"epochs": 1, "batch_size": 2},
        "metadata": {"run": "test"},
    }
    body.update(overrides)
    return body


def create_job(client: TestClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    training_file = uploaded_file_id(client, headers)
    response = client.post("/v1/jobs", headers=headers, json=job_body(training_file, **overrides))
    assert response.status_code == 201, response.text
    return dict(response.json())


def set_job(app: FastAPI, job_id: str, **values: Any) -> None:
    """Change a job row the way a worker would (claim, finish, fail)."""
    with app.state.sessionmaker() as session:
        job = session.get(Job, job_id)
        assert job is not None
        for name, value in values.items():
            setattr(job, name, value)
        session.commit()


def publish_artifact(app: FastAPI, settings: Settings, job_id: str, files: dict[str, bytes]) -> None:
    """Publish files as a worker does: bytes under artifacts/<job>/, Artifact rows, status succeeded."""
    job_dir = settings.artifacts_dir / job_id
    with app.state.sessionmaker() as session:
        for name, content in files.items():
            path = job_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            digest = hashlib.sha256(content).hexdigest()
            session.add(Artifact(job_id=job_id, name=name, bytes=len(content), sha256=digest))
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.finished_at = "succeeded", datetime.now()
        session.commit()


def broker_messages(settings: Settings) -> list[dict[str, Any]]:
    """Every message waiting in the filesystem broker: its task name, args and queue."""
    messages = []
    for path in sorted((settings.broker_dir / "queue").glob("*.msg")):
        payload = json.loads(path.read_text())
        args, _kwargs, _embed = json.loads(base64.b64decode(payload["body"]))
        queue = path.name.split(".", 1)[1].removesuffix(".msg")
        messages.append({"task": payload["headers"]["task"], "args": args, "queue": queue})
    return messages


def files_on_disk(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def statuses_when_sent(app: FastAPI, monkeypatch: pytest.MonkeyPatch, model: type[Any]) -> list[Any]:
    """Record, as each task is sent, the status of the row it names as another connection sees it.

    A worker reads the row on its own connection the moment the message arrives: a row the sender has
    not committed yet reads as None here (SQLite in WAL mode shows only committed rows to readers).
    """
    seen: list[Any] = []
    celery = app.state.celery
    send_task = celery.send_task

    def send_after_looking(name: str, args: list[Any], **options: Any) -> Any:
        with app.state.sessionmaker() as other:
            row = other.get(model, args[0])
            seen.append(None if row is None else row.status)
        return send_task(name, args=args, **options)

    monkeypatch.setattr(celery, "send_task", send_after_looking)
    return seen
