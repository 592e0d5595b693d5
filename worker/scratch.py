"""Where attempts write, and clearing what dead attempts left behind.

An attempt trains in `work/<job_id>.attempt-<n>/` (a name only it uses) and publishes into
`artifacts/<job_id>/attempt-<n>/`. An attempt that dies (SIGKILL, a lost machine) leaves its scratch
folder, perhaps a published folder whose rows never landed, a checkpoint copy under a hidden name,
and the job's resume folder. Only folders of attempts that are not current are removed: an attempt
is current while its row is running under its number, and a succeeded row's attempt is the one
whose artifact it names. Nothing another attempt may still use, or has published, is touched.
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
    _remove_attempt_folders(settings.artifacts_dir / job_id, keep=None, below=current)
    checkpoints = settings.checkpoints_dir / job_id
    for partial in checkpoints.glob(".*-incoming") if checkpoints.is_dir() else []:
        _remove(partial)


def sweep_leftovers(
    sessions: sessionmaker[Session], settings: Settings, *, artifacts: bool = False
) -> list[Path]:
    """Remove the scratch folders of attempts that are not current, the resume folders of jobs that
    ended, and (with `artifacts`, at worker start: it lists every job's folder) published folders no
    row names. Returns what it removed."""
    removed: list[Path] = []
    scratch = {path: match for path in _children(settings.work_dir) if (match := _SCRATCH.match(path.name))}
    resume = _children(settings.resume_dir)
    published = [p for p in _children(settings.artifacts_dir) if any(_attempts(p))] if artifacts else []
    ids = {m["job"] for m in scratch.values()} | {p.name for p in resume} | {p.name for p in published}
    rows = _rows(sessions, ids)
    for path, match in scratch.items():
        status, attempt = rows.get(match["job"], (None, None))
        if not (status == JobStatus.RUNNING and attempt == int(match["attempt"])):
            removed += _remove(path)
    for path in resume:
        status, _ = rows.get(path.name, (None, None))
        if path.name.startswith(".") or status not in ACTIVE:
            removed += _remove(path)
    for path in published:
        status, attempt = rows.get(path.name, (None, None))
        keep = attempt if status in (JobStatus.SUCCEEDED, JobStatus.RUNNING) else None
        removed += _remove_attempt_folders(path, keep=keep, below=None)
    for path in removed:
        logger.info("removed %s, left by an attempt that is no longer current", path)
    return removed


def _rows(sessions: sessionmaker[Session], ids: Iterable[str]) -> dict[str, tuple[str, int]]:
    wanted = sorted(ids)
    found: dict[str, tuple[str, int]] = {}
    with sessions() as session:
        for start in range(0, len(wanted), 500):
            query = select(Job.id, Job.status, Job.attempt).where(Job.id.in_(wanted[start : start + 500]))
            found |= {job_id: (status, attempt) for job_id, status, attempt in session.execute(query)}
    return found


def _attempts(job_folder: Path) -> Iterable[tuple[int, Path]]:
    for path in _children(job_folder):
        if match := _ATTEMPT.match(path.name):
            yield int(match["attempt"]), path


def _remove_attempt_folders(job_folder: Path, *, keep: int | None, below: int | None) -> list[Path]:
    removed = []
    for attempt, path in list(_attempts(job_folder)):
        if attempt != keep and (below is None or attempt < below):
            removed += _remove(path)
    return removed


def _children(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []


def _remove(path: Path) -> list[Path]:
    if not path.exists():
        return []
    shutil.rmtree(path, ignore_errors=True)
    return [path]
