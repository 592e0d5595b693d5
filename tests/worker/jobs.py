"""Building jobs straight in the database, the way the API leaves them, for the worker's tests."""

import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.models import File, Job, Owner, utcnow
from core.settings import Settings
from tuning.spec import JobSpec
from worker.lifecycle import JOBS, Attempt, Lifecycle

CUES = {
    "positive": ["great", "wonderful", "love", "excellent"],
    "negative": ["awful", "terrible", "hate", "bad"],
}
FILLER = ["the", "movie", "was", "plot", "really", "a"]


def sentiment_lines(
    count: int, *, seed: int, labels: tuple[str, ...] = ("positive", "negative")
) -> list[str]:
    """JSONL lines a tiny BERT learns in a few epochs: each label has its own cue words."""
    rng = random.Random(seed)
    lines = []
    for index in range(count):
        label = labels[index % len(labels)]
        cues = CUES.get(label, [label])
        words = rng.choices(cues, k=2) + rng.choices(FILLER, k=3)
        rng.shuffle(words)
        lines.append(json.dumps({"text": " ".join(words), "label": label}))
    return lines


def tiny_spec(training_file: str, validation_file: str | None, **hyperparameters: Any) -> JobSpec:
    hp = {"epochs": 2, "batch_size": 8, "learning_rate": 1e-2, "logging_steps": 2} | hyperparameters
    return JobSpec(
        base_model="tiny-bert",
        training_file=training_file,
        validation_file=validation_file,
        method={"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
        hyperparameters=hp,
    )


def add_file(sessions: sessionmaker[Session], settings: Settings, lines: list[str], *, purpose: str) -> str:
    """A processed file: its row and its blob at files_dir/<id>."""
    with sessions.begin() as session:
        owner = _owner(session)
        file = File(
            owner_id=owner.id,
            filename=f"{purpose}.jsonl",
            purpose=purpose,
            status="processed",
            examples=len(lines),
        )
        session.add(file)
        session.flush()
        file_id = file.id
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    (settings.files_dir / file_id).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return file_id


def add_job(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    training: list[str] | None = None,
    validation: list[str] | None = None,
    spec_changes: dict[str, Any] | None = None,
    **hyperparameters: Any,
) -> str:
    """A queued job on the tiny BERT, with its data files stored; returns the job id."""
    training_id = add_file(sessions, settings, training or sentiment_lines(32, seed=1), purpose="fine-tune")
    validation_id = add_file(
        sessions, settings, validation or sentiment_lines(16, seed=2), purpose="fine-tune"
    )
    spec = tiny_spec(training_id, validation_id, **hyperparameters).model_dump(mode="json") | (
        spec_changes or {}
    )
    with sessions.begin() as session:
        job = Job(
            owner_id=_owner(session).id,
            status="queued",
            spec=spec,
            base_model=spec["base_model"],
            method="lora",
            training_file_id=training_id,
            validation_file_id=validation_id,
            queue="cpu",
        )
        session.add(job)
        session.flush()
        return job.id


def _owner(session: Session) -> Owner:
    owner = session.scalar(select(Owner).where(Owner.name == "tester"))
    if owner is None:
        owner = Owner(name="tester")
        session.add(owner)
        session.flush()
    return owner


def job_row(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def data_path(settings: Settings, file_id: str) -> Path:
    return settings.files_dir / file_id


def try_claim(
    sessions: sessionmaker[Session],
    row_id: str,
    *,
    worker: str = "w",
    lifecycle: Lifecycle = JOBS,
    lease_seconds: float = 60.0,
) -> Attempt | None:
    return lifecycle.claim(sessions, row_id, worker=worker, lease_seconds=lease_seconds, outage_seconds=5.0)


def claim(
    sessions: sessionmaker[Session],
    row_id: str,
    *,
    worker: str = "w",
    lifecycle: Lifecycle = JOBS,
    lease_seconds: float = 60.0,
) -> Attempt:
    """A new attempt of the row, which must be claimable."""
    attempt = try_claim(sessions, row_id, worker=worker, lifecycle=lifecycle, lease_seconds=lease_seconds)
    assert attempt is not None, f"{row_id} could not be claimed"
    return attempt


def expire_lease(sessions: sessionmaker[Session], row_id: str, *, lifecycle: Lifecycle = JOBS) -> None:
    """As if the attempt running the row had stopped heartbeating a while ago."""
    table = lifecycle.table
    with sessions.begin() as session:
        session.execute(
            update(table).where(table.id == row_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
