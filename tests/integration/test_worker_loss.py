"""Worker loss for real: two Celery worker processes over Redis and PostgreSQL; the one running a job
is SIGKILLed after a resume point, and the other takes the job back once its lease expires, resumes
it from that point and ends with the weights of the job never interrupted.

Short leases (DELTATUNE_LEASE_SECONDS=2, heartbeats every 0.2 s, a sweep every 0.5 s): the job is
queued again at most lease + sweep seconds after the dead attempt's last heartbeat.
"""

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import tuning
from core.db import make_engine
from core.dispatch import enqueue_job, make_celery
from core.models import JobEvent
from core.schema_version import upgrade_to_head
from core.settings import Settings
from core.storage.keys import artifact_prefix
from tests.integration.services import flushed_redis, fresh_database
from tests.worker.jobs import add_job, data_path, job_row
from tests.worker.processes import WorkerProcess, clean_environment, wait_for
from tuning.spec import JobSpec

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

LEASE = {
    "DELTATUNE_LEASE_SECONDS": "2",
    "DELTATUNE_HEARTBEAT_SECONDS": "0.2",
    "DELTATUNE_SWEEP_SECONDS": "0.5",
}
RTOL = 64 * torch.finfo(torch.float32).eps  # two processes: float32 rounding at most, in practice none


@dataclass
class Cluster:
    settings: Settings
    sessions: sessionmaker[Session]
    workers: dict[str, WorkerProcess]

    def log(self) -> str:
        return "\n".join(f"--- {name} ---\n{w.log()[-4000:]}" for name, w in self.workers.items())


@pytest.fixture()
def cluster(
    postgres_server: str, redis_server: str, tiny_bert_dir: Path, tmp_path: Path
) -> Iterator[Cluster]:
    data_dir = tmp_path / "data"
    models = tiny_bert_dir.parent
    with fresh_database("deltatune_loss") as database_url, flushed_redis() as broker_url:
        settings = Settings(
            database_url=database_url, broker_url=broker_url, data_dir=data_dir, model_dirs=[models]
        )
        upgrade_to_head(settings.database_url)
        env = clean_environment(
            DATABASE_URL=database_url,
            DELTATUNE_BROKER_URL=broker_url,
            DELTATUNE_DATA_DIR=str(data_dir),
            DELTATUNE_MODEL_DIRS=json.dumps([str(models)]),
            DELTATUNE_AUTO_MIGRATE="false",
            DELTATUNE_RESUME_EVERY_STEPS="4",
            **LEASE,
        )
        workers = {
            name: WorkerProcess(env, tmp_path / f"{name}.log", hostname=f"{name}@localhost")
            for name in ("first", "second")
        }
        engine = make_engine(settings.database_url)
        try:
            for worker in workers.values():
                worker.start()
            for worker in workers.values():
                worker.wait_ready()
            yield Cluster(settings, sessionmaker(engine, expire_on_commit=False), workers)
        finally:
            for worker in workers.values():
                worker.stop()
            engine.dispose()


def status_events(sessions: sessionmaker[Session], job_id: str) -> list[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "status")
    with sessions() as session:
        return list(session.scalars(query.order_by(JobEvent.id)))


def latest_point(settings: Settings, job_id: str) -> int:
    folder = settings.resume_dir / job_id
    steps = [int(p.name.split("-")[1]) for p in folder.glob("step-*")] if folder.is_dir() else []
    return max(steps, default=0)


def uninterrupted_weights(settings: Settings, job_id: str, out_dir: Path) -> dict[str, torch.Tensor]:
    job = job_row_spec(settings, job_id)
    tuning.run(
        job,
        out_dir,
        training_path=data_path(settings, job.training_file),
        validation_path=data_path(settings, job.validation_file) if job.validation_file else None,
        model_dirs=settings.model_dirs,
    )
    return artifact_tensors(out_dir)


def job_row_spec(settings: Settings, job_id: str) -> JobSpec:
    engine = make_engine(settings.database_url)
    try:
        return JobSpec.model_validate(job_row(sessionmaker(engine), job_id).spec)
    finally:
        engine.dispose()


def artifact_tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors |= {f"{path.name}:{name}": tensor for name, tensor in load_file(path).items()}
    return tensors


def test_a_killed_workers_job_is_taken_back_and_resumed_by_another(cluster: Cluster, tmp_path: Path) -> None:
    settings, sessions = cluster.settings, cluster.sessions
    job_id = add_job(sessions, settings, epochs=12, logging_steps=1)  # 48 steps
    enqueue_job(make_celery(settings), job_id, "cpu")
    wait_for(
        lambda: latest_point(settings, job_id) >= 8 and job_row(sessions, job_id).status == "running",
        timeout=120,
        what="a resume point of step 8 or later",
        log=cluster.log,
    )
    doomed = next(
        name for name, w in cluster.workers.items() if w.hostname == job_row(sessions, job_id).worker
    )
    survivor = next(name for name in cluster.workers if name != doomed)
    process = cluster.workers[doomed].process
    assert process is not None
    os.killpg(process.pid, signal.SIGKILL)  # the worker and its pool child, mid-step
    killed_at = time.monotonic()
    process.wait(timeout=30)
    cluster.workers[doomed].process = None
    resumed_from = latest_point(settings, job_id)

    wait_for(
        lambda: any(e.message.startswith("queued again") for e in status_events(sessions, job_id)),
        timeout=30,
        what="the sweep to queue the job again",
        log=cluster.log,
    )
    requeued_after = time.monotonic() - killed_at
    wait_for(lambda: job_row(sessions, job_id).attempt == 2, timeout=30, what="attempt 2", log=cluster.log)
    claimed_after = time.monotonic() - killed_at
    logger.warning("SIGKILL to queued again: %.2fs, to claimed again: %.2fs", requeued_after, claimed_after)
    print(f"SIGKILL to queued again: {requeued_after:.2f}s, to claimed again: {claimed_after:.2f}s")
    # lease 2 s after the last heartbeat (at most 0.2 s before the kill) + a sweep every 0.5 s
    assert requeued_after < 2 + 0.5 + 1.5, requeued_after

    job = wait_for(
        lambda: (j := job_row(sessions, job_id)).status in ("succeeded", "failed") and j,
        timeout=180,
        what="the job to finish",
        log=cluster.log,
    )
    assert job.status == "succeeded", (job.error_code, job.error_message)
    assert job.worker == f"{survivor}@localhost" and job.attempt == 2
    with sessions() as session:
        events = list(
            session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        )
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert steps == list(range(1, 49)), "one continuous series of steps"
    resumed = [e for e in events if e.data.get("resumed_from_step") is not None]
    assert [e.message for e in resumed] == [f"resumed from step {resumed_from}"]

    ours = artifact_tensors(settings.data_dir / artifact_prefix(job_id, 2))
    theirs = uninterrupted_weights(settings, job_id, tmp_path / "uninterrupted")
    assert ours.keys() == theirs.keys() and ours
    worst = max((ours[name] - theirs[name]).abs().max().item() for name in ours)
    print(f"largest weight difference from the uninterrupted run: {worst}")
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=RTOL, atol=RTOL)
    assert not (settings.resume_dir / job_id).exists()


def pool_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def test_a_killed_pool_process_leaves_a_job_its_own_worker_takes_back(cluster: Cluster) -> None:
    # Celery redelivers the message at once (task_reject_on_worker_lost) and the claim refuses it:
    # the dead attempt's lease is still fresh. The job must not stay running forever: the lease
    # expires and the sweep of a live worker (its own parent's, or the other's) queues it again.
    settings, sessions = cluster.settings, cluster.sessions
    job_id = add_job(sessions, settings, epochs=8, logging_steps=1)  # 32 steps
    enqueue_job(make_celery(settings), job_id, "cpu")
    wait_for(
        lambda: latest_point(settings, job_id) >= 4 and job_row(sessions, job_id).status == "running",
        timeout=120,
        what="a resume point of step 4 or later",
        log=cluster.log,
    )
    running = next(w for w in cluster.workers.values() if w.hostname == job_row(sessions, job_id).worker)
    assert running.process is not None
    (child,) = pool_children(running.process.pid)
    os.kill(child, signal.SIGKILL)

    job = wait_for(
        lambda: (j := job_row(sessions, job_id)).status in ("succeeded", "failed") and j,
        timeout=180,
        what="the job to finish",
        log=cluster.log,
    )
    assert job.status == "succeeded", (job.error_code, job.error_message)
    assert job.attempt == 2
    messages = [e.message for e in status_events(sessions, job_id)]
    assert any(m.startswith("queued again: the lease of attempt 1 expired") for m in messages), messages
    with sessions() as session:
        query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
        steps = [e.data["step"] for e in session.scalars(query.order_by(JobEvent.id))]
    assert steps == list(range(1, 33))
    assert running.process.poll() is None  # the worker itself lived on
