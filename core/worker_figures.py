"""The figures workers publish (core.models.WorkerFigures): a worker writes its own row when it starts
and marks it seen every sweep; the API reads the rows of a queue's live workers for the dry run.

Here because both sides use it: the worker writes (worker/machine_figures.py, worker/tasks.py), the
API reads (service/worker_figures.py). tuning.estimate.Worker is torch-free, so the API may hold one.
"""

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.models import WorkerFigures, utcnow
from tuning.estimate import Worker

# The measured figures, as Worker and the table name them; memory_bytes is a setting, never measured.
FIGURES = (
    "float32_flops",
    "bf16_flops",
    "layer_seconds",
    "branch_seconds",
    "dropout_seconds",
    "optimizer_parameters_per_second",
    "exchange_bytes_per_second",
    "baseline_bytes",
)


def publish_figures(
    session: Session, *, hostname: str, queues: list[str], worker: Worker, measured_at: datetime
) -> None:
    """Write (or replace) `hostname`'s row, seen now, and commit."""
    figures = {name: value for name, value in asdict(worker).items() if name in FIGURES}
    session.merge(
        WorkerFigures(
            hostname=hostname,
            queues=",".join(queues),
            device=worker.device,
            measured_at=measured_at,
            seen_at=utcnow(),
            **figures,
        )
    )
    session.commit()


def mark_seen(session: Session, *, hostname: str) -> bool:
    """The worker is alive: its figures keep counting for another worker_seen_seconds. False: it has
    no row."""
    result = session.execute(
        update(WorkerFigures).where(WorkerFigures.hostname == hostname).values(seen_at=utcnow())
    )
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def recent_figures(session: Session, *, queue: str, seen_within_seconds: float) -> list[WorkerFigures]:
    """The rows of workers consuming `queue` that were seen within the last `seen_within_seconds`."""
    since = utcnow() - timedelta(seconds=seen_within_seconds)
    rows = session.scalars(select(WorkerFigures).where(WorkerFigures.seen_at >= since))
    # Few rows (one per live worker): the comma-separated queues are matched here, not in SQL.
    return [row for row in rows if queue in row.queues.split(",")]


def worker_of(row: WorkerFigures, *, memory_bytes: int | None) -> Worker:
    """The row as the estimate's Worker, with the memory the settings give a job on its queue."""
    figures: dict[str, Any] = {name: getattr(row, name) for name in FIGURES}
    return Worker(device="cuda" if row.device == "cuda" else "cpu", memory_bytes=memory_bytes, **figures)
