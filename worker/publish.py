"""Publishing a finished job's artifact: complete or absent, never half of one.

The artifact is written in the job's scratch folder, on the same filesystem as the artifact store,
so one `os.rename` makes the whole folder appear at once. The Artifact rows and the `succeeded`
status are then committed in one transaction; if that fails, the folder is taken back out, so files
without rows (or rows without files) never outlive the attempt.
"""

import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from core.models import Artifact, JobStatus
from tuning.run import RunResult
from worker.lifecycle import JOBS
from worker.progress import json_safe

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArtifactFile:
    name: str  # path relative to the artifact folder, with forward slashes
    bytes: int
    sha256: str


def publish_artifact(
    sessions: sessionmaker[Session], job_id: str, *, out_dir: Path, artifacts_dir: Path, result: RunResult
) -> list[ArtifactFile]:
    """Move `out_dir` to `artifacts_dir/<job_id>` and mark the job succeeded with its artifact rows."""
    files = describe_files(out_dir)  # hashed before publishing: nothing half-read is ever recorded
    target = artifacts_dir / job_id
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftover(target)
    os.rename(out_dir, target)
    try:
        _record_success(sessions, job_id, files, result)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    logger.info("job %s published %d files to %s", job_id, len(files), target)
    return files


def describe_files(folder: Path) -> list[ArtifactFile]:
    return [
        ArtifactFile(path.relative_to(folder).as_posix(), path.stat().st_size, _sha256(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]


def _record_success(
    sessions: sessionmaker[Session], job_id: str, files: list[ArtifactFile], result: RunResult
) -> None:
    with sessions.begin() as session:
        session.add_all(Artifact(job_id=job_id, name=f.name, bytes=f.bytes, sha256=f.sha256) for f in files)
        finished = JOBS.finish(
            session,
            job_id,
            JobStatus.SUCCEEDED,
            f"succeeded: {len(files)} artifact files published",
            columns={
                "metrics": json_safe(result.metrics),
                "examples_seen": result.examples_seen,
                "trained_tokens": result.trained_tokens,
                "progress": 1.0,
            },
            artifacts=[f.name for f in files],
        )
        if not finished:
            # Only this worker moves a running job on; anything else means the rows must not land.
            raise RuntimeError(f"job {job_id} is no longer running; its artifact is not published")


def _remove_leftover(target: Path) -> None:
    """Clear what a crashed earlier attempt of this job published without recording it."""
    if not target.exists():
        return
    logger.warning("replacing the leftover artifact folder %s of an earlier attempt", target)
    # Renamed aside first, so a crash while deleting leaves nothing at the published path.
    aside = target.with_name(f".{target.name}-leftover-{uuid.uuid4().hex[:8]}")
    os.rename(target, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
