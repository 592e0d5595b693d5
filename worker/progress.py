"""The training loop's event sink: every `tuning.events.Event` becomes a job event row at once.

Each event is committed in its own short transaction, fenced by the attempt (worker.lifecycle), so a
client polling the job sees progress while it trains and a stale attempt adds nothing; the job row
carries the latest progress, metrics and counters alongside. When an attempt resumes from step k
(the `resumed from step k` event), the step events of earlier attempts after k go in the same
transaction: the job's events read as one continuous series of steps.

At each logging step the job row also gets the examples and tokens trained so far and an estimated
finish: the steps left at the rate of the steps so far. The training loop's clock (elapsed_seconds)
leaves out loading the model and carries on across a resume, so neither skews the rate.
"""

import math
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from core.models import Job, JobEvent, utcnow
from tuning.events import Event
from worker.lifecycle import Attempt

# Event fields that describe the run's position rather than a measurement (the counters are columns).
_NOT_METRICS = frozenset({"total_steps", "examples_seen", "trained_tokens"})
_COUNTERS = ("examples_seen", "trained_tokens")


class ProgressRecorder:
    """Use as `on_event`: stores the event and updates the job's progress and latest metrics."""

    def __init__(self, attempt: Attempt) -> None:
        self._attempt = attempt
        self._job_id = attempt.row_id
        self._total_steps: int | None = None  # eval events carry no total; remember the last one

    def __call__(self, event: Event) -> None:
        data = json_safe(event.data)

        def store(session: Session) -> None:
            resumed_from = data.get("resumed_from_step")
            if isinstance(resumed_from, int):
                forget_steps_after(session, self._job_id, resumed_from)
            session.add(JobEvent(job_id=self._job_id, type=event.type, message=event.message, data=data))
            job = session.get(Job, self._job_id)
            if job is not None:
                self._update_job(job, event.type, data)

        self._attempt.write(store, what=f"storing a {event.type} event")

    def _update_job(self, job: Job, event_type: str, data: dict[str, Any]) -> None:
        if isinstance(data.get("total_steps"), int) and data["total_steps"] > 0:
            self._total_steps = data["total_steps"]
        step = data.get("step")
        if isinstance(step, int) and self._total_steps:
            job.progress = min(step / self._total_steps, 1.0)
        if event_type in ("metrics", "eval"):
            # None stays: a loss that diverged must not leave the last finite one on show.
            measured = {
                key: value
                for key, value in data.items()
                if (value is None or _is_number(value)) and key not in _NOT_METRICS
            }
            job.metrics = {**(job.metrics or {}), **measured}  # a new dict, so the JSON column is saved
        for counter in _COUNTERS:
            if isinstance(data.get(counter), int):
                setattr(job, counter, data[counter])
        if event_type == "metrics":
            seconds_left = _seconds_left(data)
            if seconds_left is not None:
                job.estimated_finish_at = utcnow() + timedelta(seconds=seconds_left)


def _seconds_left(data: dict[str, Any]) -> float | None:
    """The seconds the steps left take at the rate of the steps so far; None without a rate."""
    step, total, elapsed = data.get("step"), data.get("total_steps"), data.get("elapsed_seconds")
    if (
        not (isinstance(step, int) and isinstance(total, int) and isinstance(elapsed, int | float))
        or step <= 0
    ):
        return None
    return max(total - step, 0) * float(elapsed) / step


def forget_steps_after(session: Session, job_id: str, step: int) -> None:
    """Delete the job's events of steps after `step`: what an interrupted attempt trained past its
    resume point, which the resumed attempt trains again."""
    session.execute(
        delete(JobEvent)
        .where(
            JobEvent.job_id == job_id, JobEvent.type != "status", JobEvent.data["step"].as_integer() > step
        )
        .execution_options(synchronize_session=False)
    )


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None: PostgreSQL's JSON refuses them, and a loss can diverge."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
