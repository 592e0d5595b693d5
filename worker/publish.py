"""Publishing a finished job's artifact: complete or absent, never half of one, never another's.

The artifact is written in the attempt's scratch folder and stored (core.storage) at a key only this
attempt uses, `artifacts/<job>/attempt-<n>/`: in the data folder by one `os.rename` (the scratch folder
is on the same filesystem), in S3 object by object. Either way nothing reads it until the Artifact rows
and the `succeeded` status are committed, in one transaction fenced by the attempt: that commit is the
publish. If the commit is refused (the attempt lost the job) the folder is taken back out; if its
outcome is unknown (the connection lost during the commit) the row is read back to settle it. No
attempt ever deletes a folder it did not publish itself.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from core.models import Artifact, JobStatus
from core.storage import Storage
from core.storage.keys import artifact_prefix
from tuning.run import RunResult
from worker.lifecycle import Attempt, OutcomeUnknown
from worker.progress import json_safe

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArtifactFile:
    name: str  # path relative to the artifact folder, with forward slashes
    bytes: int
    sha256: str


def publish_artifact(
    attempt: Attempt, *, out_dir: Path, storage: Storage, result: RunResult
) -> list[ArtifactFile]:
    """Move `out_dir` to the attempt's artifact folder and mark the job succeeded with its rows."""
    files = describe_files(out_dir)  # hashed before publishing: nothing half-read is ever recorded
    target = artifact_prefix(attempt.row_id, attempt.number)
    storage.publish_folder(out_dir, target, move=True)  # the attempt's own key: nothing earlier there
    try:
        _record_success(attempt, files, result)
    except OutcomeUnknown:
        # Perhaps committed: the folder stays, named by its rows or, if not, cleared by a sweep.
        logger.warning("%s: whether the publish committed is unknown; %s kept", attempt.describe(), target)
        raise
    except BaseException:
        storage.remove_folder(target)  # ours: the rows that would name it never landed
        raise
    logger.info("%s published %d files to %s", attempt.describe(), len(files), target)
    return files


def describe_files(folder: Path) -> list[ArtifactFile]:
    return [
        ArtifactFile(path.relative_to(folder).as_posix(), path.stat().st_size, _sha256(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]


def _record_success(attempt: Attempt, files: list[ArtifactFile], result: RunResult) -> None:
    job_id = attempt.row_id
    attempt.finish(
        JobStatus.SUCCEEDED,
        f"succeeded: {len(files)} artifact files published",
        columns={
            "metrics": json_safe(result.metrics),
            "examples_seen": result.examples_seen,
            "trained_tokens": result.trained_tokens,
            "progress": 1.0,
        },
        rows=lambda: [Artifact(job_id=job_id, name=f.name, bytes=f.bytes, sha256=f.sha256) for f in files],
        artifacts=[f.name for f in files],
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
