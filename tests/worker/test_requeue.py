"""A starting worker re-sends what lost its message: queued jobs, and its own orphans."""

import base64
import json

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.dispatch import RUN_JOB_TASK, make_celery
from core.models import Job
from core.settings import Settings
from tests.worker.jobs import add_job, job_row
from worker.lifecycle import JOBS


def sent_messages(settings: Settings) -> list[tuple[str, str, list[str]]]:
    """(queue, task name, args) of every message waiting in the filesystem broker."""
    messages = []
    queue_dir = settings.broker_dir / "queue"  # made by the first send
    for path in sorted(queue_dir.iterdir()) if queue_dir.is_dir() else []:
        queue = path.name.split(".")[-2]
        envelope = json.loads(path.read_text())
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        messages.append((queue, envelope["headers"]["task"], args))
    return messages


def set_status(sessions: sessionmaker[Session], job_id: str, status: str) -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))


def test_every_queued_job_is_sent_again(sessions: sessionmaker[Session], settings: Settings) -> None:
    waiting = [add_job(sessions, settings), add_job(sessions, settings)]
    finished = add_job(sessions, settings)
    set_status(sessions, finished, "succeeded")

    sent = JOBS.resend_queued(sessions, make_celery(settings))

    assert sent == waiting
    # The broker orders files by millisecond, so two sent in the same one may come back either way.
    assert sorted(sent_messages(settings)) == sorted(("cpu", RUN_JOB_TASK, [job_id]) for job_id in waiting)


def test_a_restarted_worker_queues_its_own_orphans_again(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    mine, theirs = add_job(sessions, settings), add_job(sessions, settings)
    assert JOBS.claim(sessions, mine, worker="celery@here")
    assert JOBS.claim(sessions, theirs, worker="celery@elsewhere")

    assert JOBS.requeue_orphans(sessions, worker="celery@here") == [mine]

    job = job_row(sessions, mine)
    assert (job.status, job.worker, job.started_at) == ("queued", None, None)
    assert job_row(sessions, theirs).status == "running"  # another worker may still be running it
    assert JOBS.claim(sessions, mine, worker="celery@here")  # and the next delivery can claim it


def test_nothing_to_resend_sends_nothing(sessions: sessionmaker[Session], settings: Settings) -> None:
    assert JOBS.resend_queued(sessions, make_celery(settings)) == []
    assert sent_messages(settings) == []
