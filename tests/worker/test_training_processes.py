"""A job that asks for 2 processes, run by the worker: torchrun starts them, rank 0's events and resume
points reach the job through the worker's own recorder and store, and a process SIGKILLed mid-job is
started again (a fresh torchrun) and resumes from the latest stored point; the job ends as on 1 process.
A pause reaches rank 0 too, and the paused job goes on on 1 process.

Real processes (gloo on the CPU); the model has no dropout, so 1 and 2 processes agree to float32
rounding (tests/tuning/distributed_jobs.py says why ATOL).
"""

import os
import signal
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.models import Job, JobEvent
from core.settings import Settings
from tests.tiny_models import make_tiny_bert
from tests.tuning.distributed_jobs import ATOL
from tests.worker.jobs import add_job, job_row
from tests.worker.test_pause import ask, asks_at_step
from tests.worker.test_resume import weights
from tuning.events import Event
from worker import job_runner
from worker.job_runner import run_job
from worker.progress import ProgressRecorder

KILL_AT = 5  # between the resume points of steps 4 and 6: step 6 needs the killed process


class KillsARankAtStep(ProgressRecorder):
    def __call__(self, event: Event) -> None:
        super().__call__(event)
        if event.type == "metrics" and event.data["step"] == KILL_AT and not KillsARankAtStep.done:
            KillsARankAtStep.done = True
            (torchrun,) = [
                p for p in psutil.Process().children() if "torch.distributed.run" in " ".join(p.cmdline())
            ]
            os.kill(torchrun.children()[0].pid, signal.SIGKILL)

    done = False


@pytest.fixture()
def two_process_settings(settings: Settings, tmp_path: Path) -> Settings:
    make_tiny_bert(tmp_path / "models" / "tiny-bert-nodrop", dropout=0.0)
    return settings.model_copy(
        update={
            "resume_every_steps": 2,
            "resume_every_seconds": None,
            "model_dirs": [tmp_path / "models"],
            "worker_max_processes_per_job": 2,
            "worker_process_restarts": 1,
        }
    )


def job(sessions: sessionmaker[Session], settings: Settings, processes: int) -> str:
    changes = {
        "base_model": "tiny-bert-nodrop",
        "head": {"dropout": 0.0},
        "resources": {"processes": processes},
    }
    return add_job(
        sessions,
        settings,
        spec_changes=changes,
        epochs=2,
        batch_size=7,
        logging_steps=1,
        mixed_precision="no",
    )


@pytest.mark.timeout(240)
def test_a_rank_killed_mid_job_resumes_and_the_job_ends_as_on_one_process(
    two_process_settings: Settings, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = two_process_settings
    one = job(sessions, settings, 1)
    assert run_job(one, settings=settings, sessions=sessions, worker="w") == "succeeded"

    two = job(sessions, settings, 2)
    monkeypatch.setattr(job_runner, "ProgressRecorder", KillsARankAtStep)
    assert run_job(two, settings=settings, sessions=sessions, worker="w") == "succeeded"
    assert KillsARankAtStep.done

    ours, theirs = weights(sessions, settings, two), weights(sessions, settings, one)
    assert ours.keys() == theirs.keys() and ours
    for name, tensor in ours.items():
        assert (tensor - theirs[name]).abs().max().item() <= ATOL, name
    query = select(JobEvent).where(JobEvent.job_id == two).order_by(JobEvent.id)
    with sessions() as session:
        events = list(session.scalars(query))
    assert [e.data["resumed_from_step"] for e in events if "resumed_from_step" in e.data] == [4]
    # Step 5 ran twice; the job's events read as one series, as the worker records any resume.
    assert [e.data["step"] for e in events if e.type == "metrics"] == list(range(1, 11))
    row, reference = job_row(sessions, two), job_row(sessions, one)
    assert row.attempt == 1  # started again within the attempt: the lease never lapsed
    for name, value in reference.metrics.items():
        if not name.endswith("_seconds"):
            assert row.metrics[name] == pytest.approx(value, abs=ATOL), name
    assert list(settings.work_dir.iterdir()) == []


@pytest.mark.timeout(120)
def test_a_job_paused_on_two_processes_resumes_on_one_and_ends_as_on_one(
    two_process_settings: Settings, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = two_process_settings.model_copy(update={"resume_every_steps": None})  # the pause's only
    one = job(sessions, settings, 1)
    assert run_job(one, settings=settings, sessions=sessions, worker="w") == "succeeded"

    two = job(sessions, settings, 2)
    with monkeypatch.context() as patch:  # asked at step 3: rank 0 hears of it at its next step
        patch.setattr(job_runner, "ProgressRecorder", asks_at_step(sessions, pause_requested=True))
        assert run_job(two, settings=settings, sessions=sessions, worker="w") == "paused"
    assert sorted(p.name for p in (settings.resume_dir / two).iterdir()) == ["step-00000003"]

    # The job's spec now asks for 1 process (a worker class that offers fewer): it goes on from there.
    spec = job_row(sessions, two).spec | {"resources": {"processes": 1}}
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == two).values(spec=spec))
    ask(sessions, two, status="queued")
    assert run_job(two, settings=settings, sessions=sessions, worker="w") == "succeeded"
    ours, theirs = weights(sessions, settings, two), weights(sessions, settings, one)
    assert ours.keys() == theirs.keys() and ours
    for name, tensor in ours.items():
        assert (tensor - theirs[name]).abs().max().item() <= ATOL, name
