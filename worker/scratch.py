"""Where attempts write, and clearing what dead attempts left behind.

An attempt trains in `work/<job_id>.attempt-<n>/` (a name only it uses, in this host's data folder)
and publishes into `artifacts/<job_id>/attempt-<n>/` in the store (core.storage). An attempt that
dies (SIGKILL, a lost machine) leaves its scratch folder, perhaps a published folder whose rows never
landed, a checkpoint copy under a hidden name, and the job's resume folder. Only folders of attempts
that are not current are removed: an attempt is current while its row is running under its number,
and a succeeded row's attempt is the one whose artifact it names. Nothing another attempt may still
use, or has published, is touched.
"""

import logging
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.models import ACTIVE, Job, JobStatus
from core.settings import Settings
from core.storage import Storage, open_storage
from core.storage.keys import ARTIFACTS, CHECKPOINTS, RESUME, job_artifacts, job_checkpoints, join

logger = logging.getLogger(__name__)

_SCRATCH = re.compile(r"^(?P<job>.+)\.attempt-(?P<attempt>\d+)$")
_ATTEMPT = re.compile(r"^attempt-(?P<attempt>\d+)$")


def scratch_folder(settings: Settings, job_id: str, attempt: int) -> Path:
    """On the same filesystem as artifacts_dir, so publishing is one rename."""
    return settings.work_dir / f"{job_id}.attempt-{attempt}"


def clear_dead_attempts(settings: Settings, job_id: str, *, current: int) -> None:
    """At the claim of attempt `current`: the earlier attempts are dead (their lease expired), so their
    scratch, unrecorded published folders and checkpoint copies go (none of them ever succeeded: a
    succeeded row is never claimed)."""
    for attempt in range(1, current):
        _remove(scratch_folder(settings, job_id, attempt))
    storage = open_storage(settings)
    _remove_attempt_folders(storage, job_artifacts(job_id), keep=None, below=current)
    for name in storage.folders(job_checkpoints(job_id)):
        if name.startswith("."):  # a copy cut short (the local engine's hidden staging names)
            storage.remove_folder(join(job_checkpoints(job_id), name))


def sweep_leftovers(
    sessions: sessionmaker[Session], settings: Settings, *, artifacts: bool = False
) -> list[str]:
    """Remove this host's scratch folders of attempts that are not current, the stored resume folders
    of jobs that ended, and (with `artifacts`, at worker start: it lists every job's folder) published
    folders no row names and the checkpoints of jobs that are gone (a deletion cut short). Returns
    what it removed (paths, and storage keys)."""
    storage = open_storage(settings)
    removed: list[str] = []
    scratch = {path: match for path in _children(settings.work_dir) if (match := _SCRATCH.match(path.name))}
    resume = storage.folders(RESUME)
    jobs_published = storage.folders(ARTIFACTS) if artifacts else []
    published = [job for job in jobs_published if any(_attempts(storage, job_artifacts(job)))]
    checkpointed = storage.folders(CHECKPOINTS) if artifacts else []
    ids = {m["job"] for m in scratch.values()} | set(resume) | set(published) | set(checkpointed)
    rows = _rows(sessions, ids)
    for path, match in scratch.items():
        status, attempt = rows.get(match["job"], (None, None))
        if not (status == JobStatus.RUNNING and attempt == int(match["attempt"])):
            removed += [str(path) for path in _remove(path)]
    for job_id in resume:
        status, _ = rows.get(job_id, (None, None))
        if job_id.startswith(".") or status not in ACTIVE:
            storage.remove_folder(join(RESUME, job_id))
            removed.append(join(RESUME, job_id))
    for job_id in published:
        status, attempt = rows.get(job_id, (None, None))
        keep = attempt if status in (JobStatus.SUCCEEDED, JobStatus.RUNNING) else None
        removed += _remove_attempt_folders(storage, job_artifacts(job_id), keep=keep, below=None)
    for job_id in checkpointed:
        if job_id not in rows:  # only a job that exists writes checkpoints: this one was deleted
            storage.remove_folder(job_checkpoints(job_id))
            removed.append(job_checkpoints(job_id))
    for what in removed:
        logger.info("removed %s, left by an attempt that is no longer current", what)
    return removed


def _rows(sessions: sessionmaker[Session], ids: Iterable[str]) -> dict[str, tuple[str, int]]:
    wanted = sorted(ids)
    found: dict[str, tuple[str, int]] = {}
    with sessions() as session:
        for start in range(0, len(wanted), 500):
            query = select(Job.id, Job.status, Job.attempt).where(Job.id.in_(wanted[start : start + 500]))
            found |= {job_id: (status, attempt) for job_id, status, attempt in session.execute(query)}
    return found


def _attempts(storage: Storage, job_folder: str) -> Iterable[tuple[int, str]]:
    for name in storage.folders(job_folder):
        if match := _ATTEMPT.match(name):
            yield int(match["attempt"]), join(job_folder, name)


def _remove_attempt_folders(
    storage: Storage, job_folder: str, *, keep: int | None, below: int | None
) -> list[str]:
    removed = []
    for attempt, key in list(_attempts(storage, job_folder)):
        if attempt != keep and (below is None or attempt < below):
            storage.remove_folder(key)
            removed.append(key)
    return removed


def _children(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []


def _remove(path: Path) -> list[Path]:
    if not path.exists():
        return []
    shutil.rmtree(path, ignore_errors=True)
    return [path]
