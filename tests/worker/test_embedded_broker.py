"""The embedded broker for real: a Celery worker process consumes from kombu's filesystem transport,
acks late (a cold shutdown hands the unfinished message back), and no killed worker loses a job: its
lease expires and the sweep queues the job again."""

import base64
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.dispatch import enqueue_job, make_celery
from core.models import Artifact, Job, JobEvent
from core.settings import Settings
from tests.worker.jobs import add_job, job_row
from tests.worker.processes import WorkerProcess, clean_environment, wait_for

HOSTNAME = "embedded-test@localhost"


@pytest.fixture()
def worker(settings: Settings, sessions: sessionmaker[Session], tmp_path: Path) -> Iterator[WorkerProcess]:
    env = clean_environment(
        DELTATUNE_DATA_DIR=str(settings.data_dir),
        DELTATUNE_MODEL_DIRS=json.dumps([str(path) for path in settings.model_dirs]),
        DELTATUNE_LEASE_SECONDS="2",
        DELTATUNE_HEARTBEAT_SECONDS="0.2",
        DELTATUNE_SWEEP_SECONDS="0.5",
    )
    process = WorkerProcess(env, tmp_path / "worker.log", hostname=HOSTNAME).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def queued_job_ids(settings: Settings) -> list[str]:
    """The job id of every message file waiting in the broker's queue folder."""
    folder = settings.broker_dir / "queue"
    return [
        json.loads(base64.b64decode(json.loads(path.read_text())["body"]))[0][0] for path in folder.iterdir()
    ]


def status_of(sessions: sessionmaker[Session], job_id: str) -> str:
    return job_row(sessions, job_id).status


def claims(sessions: sessionmaker[Session], job_id: str) -> int:
    with sessions() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(JobEvent)
                .where(
                    JobEvent.job_id == job_id, JobEvent.type == "status", JobEvent.message.like("claimed by%")
                )
            )
            or 0
        )


def artifact_count(sessions: sessionmaker[Session], job_id: str) -> int:
    with sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Artifact).where(Artifact.job_id == job_id)) or 0
        )


def test_a_worker_consumes_a_job_from_the_filesystem_broker(
    settings: Settings, sessions: sessionmaker[Session], worker: WorkerProcess
) -> None:
    job_id = add_job(sessions, settings, epochs=1)
    enqueue_job(make_celery(settings), job_id, "cpu")

    wait_for(
        lambda: status_of(sessions, job_id) == "succeeded",
        timeout=120,
        what="the job to succeed",
        log=worker.log,
    )
    assert job_row(sessions, job_id).worker == HOSTNAME
    assert artifact_count(sessions, job_id) >= 2
    assert queued_job_ids(settings) == []  # taken, and acknowledged once done


def request_cancel(sessions: sessionmaker[Session], job_id: str) -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))


@pytest.mark.parametrize("how", ["cold shutdown", "killed"])
def test_a_job_whose_worker_stops_mid_run_is_not_lost(
    settings: Settings, sessions: sessionmaker[Session], worker: WorkerProcess, how: str
) -> None:
    # Too long to finish on its own here: the test ends it with a cancel once it has made its point.
    job_id = add_job(sessions, settings, epochs=1000, logging_steps=1)
    enqueue_job(make_celery(settings), job_id, "cpu")
    wait_for(
        lambda: status_of(sessions, job_id) == "running" and job_row(sessions, job_id).progress > 0,
        timeout=120,
        what="the job to be training",
        log=worker.log,
    )
    # Taken from the queue but not acknowledged (acks_late): the message lives only in the worker now.
    assert queued_job_ids(settings) == []

    assert worker.process is not None
    if how == "cold shutdown":
        # One SIGQUIT, as `deltatune serve` sends once a Ctrl+C's warm-shutdown grace is over, and no
        # second: the running task is cancelled, its message goes back, the worker exits (on their own;
        # worker/pool_exit.py says why they once did not).
        worker.process.send_signal(signal.SIGQUIT)
        wait_for(
            lambda: "Restoring 1 unacknowledged message" in worker.log(),
            timeout=60,
            what="the cold shutdown to hand the message back",
            log=worker.log,
        )
        process = worker.process
        wait_for(lambda: process.poll() is not None, timeout=30, what="the worker to exit", log=worker.log)
        # acks_late: the unfinished message went back (and the sweep may have sent another already,
        # had the lease expired before the worker's own sweep stopped).
        assert set(queued_job_ids(settings)) == {job_id}
    else:
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=60)
        assert queued_job_ids(settings) == []  # a killed process takes its unacknowledged message along
    assert status_of(sessions, job_id) in ("running", "queued")

    # The same worker name, which no longer matters: the dead attempt's lease expires, a sweep queues
    # the job again (a redelivered message meanwhile finds the lease fresh and does nothing).
    worker.start()
    wait_for(
        lambda: claims(sessions, job_id) == 2 and status_of(sessions, job_id) == "running",
        timeout=120,
        what="the job to run again",
        log=worker.log,
    )
    request_cancel(sessions, job_id)
    wait_for(
        lambda: status_of(sessions, job_id) == "cancelled", timeout=60, what="the cancel", log=worker.log
    )
    assert claims(sessions, job_id) == 2  # the interrupted attempt and the one that ran again
