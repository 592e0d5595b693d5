"""Exact resume on the worker: a job whose attempt dies after a resume point at step k is resumed by
the next claim from step k, ends with the same weights as the job never interrupted, and its events
read as one continuous series of steps plus `resumed from step k`.

The attempt dies in-process here (an exception no handler catches, out of the event sink at step s's
metrics event: the moment a SIGKILL could land, leaving the row running under its lease);
tests/integration/test_worker_loss.py kills real worker processes.
"""

import pytest
from safetensors.torch import load_file
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.dispatch import make_celery
from core.models import JobEvent
from core.settings import Settings
from core.storage.keys import artifact_prefix
from tests.worker.jobs import add_job, expire_lease, job_row
from tuning.events import Event
from worker import job_runner
from worker.job_runner import run_job
from worker.progress import ProgressRecorder
from worker.sweep import sweep

KILL_AT = 5  # a step after the resume point of step 4 (the first epoch's end)
HYPERPARAMETERS = {"epochs": 2, "logging_steps": 1}


class Killed(BaseException):
    """The worker's process dies here: nothing of the worker's handles it."""


class DiesAtStep(ProgressRecorder):
    def __call__(self, event: Event) -> None:
        super().__call__(event)
        if event.type == "metrics" and event.data["step"] == KILL_AT:
            raise Killed()


def weights(sessions: sessionmaker[Session], settings: Settings, job_id: str) -> dict[str, object]:
    folder = settings.data_dir / artifact_prefix(job_id, job_row(sessions, job_id).attempt)
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors |= {f"{path.name}:{name}": tensor for name, tensor in load_file(path).items()}
    return tensors


def step_events(sessions: sessionmaker[Session], job_id: str) -> list[tuple[str, int]]:
    query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    with sessions() as session:
        return [(e.type, e.data["step"]) for e in session.scalars(query) if e.type in ("metrics", "eval")]


def messages(sessions: sessionmaker[Session], job_id: str) -> list[str]:
    query = select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    with sessions() as session:
        return list(session.scalars(query))


@pytest.fixture()
def resuming(settings: Settings) -> Settings:
    return settings.model_copy(update={"resume_every_steps": 2, "resume_every_seconds": None})


def test_a_job_killed_after_a_resume_point_resumes_there_and_ends_as_if_never_stopped(
    resuming: Settings, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = resuming
    whole = add_job(sessions, settings, **HYPERPARAMETERS)
    assert run_job(whole, settings=settings, sessions=sessions, worker="w") == "succeeded"

    job_id = add_job(sessions, settings, **HYPERPARAMETERS)
    with monkeypatch.context() as patch:
        patch.setattr(job_runner, "ProgressRecorder", DiesAtStep)
        with pytest.raises(Killed):
            run_job(job_id, settings=settings, sessions=sessions, worker="celery@dead")
    assert job_row(sessions, job_id).status == "running"
    points = sorted(path.name for path in (settings.resume_dir / job_id).iterdir())
    assert points == ["step-00000004"]  # only the latest is kept

    expire_lease(sessions, job_id)
    assert sweep(settings, make_celery(settings)).requeued == [job_id]
    assert run_job(job_id, settings=settings, sessions=sessions, worker="celery@alive") == "succeeded"

    job = job_row(sessions, job_id)
    assert (job.status, job.attempt, job.progress) == ("succeeded", 2, 1.0)
    ours, theirs = weights(sessions, settings, job_id), weights(sessions, settings, whole)
    assert ours.keys() == theirs.keys() and ours
    for name, tensor in ours.items():
        assert (tensor - theirs[name]).abs().max().item() == 0.0, name  # bit-identical on the CPU
    assert step_events(sessions, job_id) == step_events(sessions, whole)
    assert "resumed from step 4" in messages(sessions, job_id)
    assert job.metrics.keys() == job_row(sessions, whole).metrics.keys()
    assert not (settings.resume_dir / job_id).exists()  # ended: nothing left to resume
    assert list(settings.work_dir.iterdir()) == []
