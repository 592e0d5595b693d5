"""A succeeded job's `result_files`, as OpenAI's API has them: one CSV of its step metrics, a file
(purpose `fine-tune-results`) that GET /v1/files/{id}/content downloads like any other.

The CSV is made from the job's own metrics and evaluation events the first time the job is read
through /v1/fine_tuning/jobs after it succeeded; its id follows from the job's, so two readers
racing make one file, and a finished job's events never change, so it is the same CSV either way.
Columns: step, epoch, train_loss, learning_rate, then valid_<metric> for each evaluation metric
(`valid_loss`, and token_accuracy as OpenAI's `valid_mean_token_accuracy`).
"""

import csv
import hashlib
import io
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.models import File, Job, JobEvent, JobStatus, is_job_id
from core.settings import Settings
from core.storage import open_storage
from core.storage.keys import file_key
from service.crud import files as file_crud

PURPOSE = "fine-tune-results"
TRAIN_COLUMNS = ("step", "epoch", "train_loss", "learning_rate")
OPENAI_NAMES = {"token_accuracy": "mean_token_accuracy"}


def result_file_id(job_id: str) -> str:
    return "file-results-" + (job_id.split("-", 1)[1] if is_job_id(job_id) else job_id)


def result_files(session: Session, settings: Settings, job: Job) -> list[str]:
    """The ids of the job's result files: none until it succeeded."""
    if job.status != JobStatus.SUCCEEDED:
        return []
    file_id = result_file_id(job.id)
    if file_crud.get_file(session, owner_id=job.owner_id, file_id=file_id) is None:
        _create(session, settings, job, file_id)
    return [file_id]


def metrics_csv(session: Session, job_id: str) -> tuple[bytes, int]:
    """The CSV and its number of rows: one row per step that logged metrics or was evaluated."""
    rows: dict[int, dict[str, Any]] = {}
    valid_columns: list[str] = []
    events = session.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.type.in_(("metrics", "eval")))
        .order_by(JobEvent.id)
    )
    for event in events:
        data = event.data or {}
        step = data.get("step")
        if not isinstance(step, int):
            continue
        row = rows.setdefault(step, {"step": step})
        if "epoch" in data:
            row["epoch"] = data["epoch"]
        if event.type == "metrics":
            row.update({name: data[name] for name in TRAIN_COLUMNS[2:] if name in data})
            continue
        for name, value in data.items():
            if name.startswith("val_"):
                column = "valid_" + OPENAI_NAMES.get(name[4:], name[4:])
                if column not in valid_columns:
                    valid_columns.append(column)
                row[column] = value
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[*TRAIN_COLUMNS, *valid_columns], lineterminator="\n")
    writer.writeheader()
    for step in sorted(rows):
        writer.writerow(rows[step])
    return text.getvalue().encode(), len(rows)


def _create(session: Session, settings: Settings, job: Job, file_id: str) -> None:
    content, count = metrics_csv(session, job.id)
    # Whole or not at all (written aside and renamed, or one PUT): a reader never sees half a CSV.
    open_storage(settings).put_bytes(content, file_key(file_id))
    session.add(
        File(
            id=file_id,
            owner_id=job.owner_id,
            filename=f"{job.id}_step_metrics.csv",
            purpose=PURPOSE,
            bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            status=file_crud.PROCESSED,
            examples=count,
        )
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()  # another reader made it first: the same file
