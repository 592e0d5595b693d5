"""Which worker figures a job's estimate uses (the dry run's answer, and the estimate a job stores).

Each figure, in this order:

1. the setting, when an operator gave it (DELTATUNE_WORKER_FLOPS and the others: pydantic's
   `model_fields_set`), to overrule what the workers measured or describe workers that measure none;
2. else what the queue's workers published (worker/machine_figures.py), from those seen within
   `worker_seen_seconds`: the slowest one's, the worker whose FLOP/s in the precision `auto` trains in
   is lowest, since the job may land on any of them and an estimate for the fastest would promise
   too much;
3. else the setting's default, one build machine's figures (core/settings.py), which the answer says.

The worker class's memory (`worker_memory_bytes`) is always the setting's: a worker does not measure it.
"""

from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy.orm import Session

from core.models import WorkerFigures
from core.settings import Settings
from core.worker_figures import recent_figures, worker_of
from tuning.estimate import Worker

Source = Literal["settings", "published", "defaults"]

# Worker's figure -> the setting that gives it.
SETTING_OF = {
    "float32_flops": "worker_flops",
    "bf16_flops": "worker_bf16_flops",
    "layer_seconds": "worker_layer_seconds",
    "branch_seconds": "worker_branch_seconds",
    "dropout_seconds": "worker_dropout_seconds",
    "optimizer_parameters_per_second": "worker_optimizer_parameters_per_second",
    "exchange_bytes_per_second": "worker_exchange_bytes_per_second",
    "baseline_bytes": "worker_baseline_bytes",
}


@dataclass(frozen=True)
class EstimateWorker:
    """The figures, and where they came from: `source` the first rule above that gave any of them,
    `description` a line for the dry run's estimate_method naming each source."""

    worker: Worker
    source: Source
    description: str


def estimate_worker(session: Session, settings: Settings) -> EstimateWorker:
    """The worker the estimate of a job on settings.job_queue describes, by the rules above."""
    rows = recent_figures(session, queue=settings.job_queue, seen_within_seconds=settings.worker_seen_seconds)
    published = slowest(rows)
    source: Source
    if published is None:
        base, source = settings_worker(settings), "defaults"
        described = "the settings' defaults (no worker of the queue published any)"
    else:
        base, source = worker_of(published, memory_bytes=settings.worker_memory_bytes), "published"
        described = (
            f"published by worker {published.hostname}, measured {published.measured_at:%Y-%m-%d %H:%M} "
            f"UTC, the slowest of the {len(rows)} of queue {settings.job_queue!r} seen in the last "
            f"{settings.worker_seen_seconds:g} s"
        )
    explicit = explicit_figures(settings)
    if not explicit:
        return EstimateWorker(base, source, f"worker figures {described}")
    names = ", ".join(f"DELTATUNE_{SETTING_OF[figure].upper()}" for figure in explicit)
    rest = "" if len(explicit) == len(SETTING_OF) else f"; the others {described}"
    return EstimateWorker(replace(base, **explicit), "settings", f"worker figures from {names}{rest}")


def explicit_figures(settings: Settings) -> dict[str, Any]:
    """The figures whose setting an operator gave (a variable, or an argument to Settings)."""
    given = settings.model_fields_set
    return {figure: getattr(settings, name) for figure, name in SETTING_OF.items() if name in given}


def slowest(rows: list[WorkerFigures]) -> WorkerFigures | None:
    """The row whose training FLOP/s under mixed_precision auto is lowest; None without rows."""
    if not rows:
        return None
    return min(rows, key=lambda row: worker_of(row, memory_bytes=None).training_flops("auto")[0])


def settings_worker(settings: Settings) -> Worker:
    """The worker class of the queue new jobs go to, as the settings alone describe it."""
    figures: dict[str, Any] = {figure: getattr(settings, name) for figure, name in SETTING_OF.items()}
    device: Literal["cpu", "cuda"] = "cuda" if settings.job_queue == "gpu" else "cpu"
    return Worker(device=device, memory_bytes=settings.worker_memory_bytes, **figures)
