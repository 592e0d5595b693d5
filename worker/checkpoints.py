"""Publishing checkpoints as a job writes them, and finding one for a job that starts from it.

A checkpoint lives at `checkpoints/<job_id>/<checkpoint id>/` in the data folder. Like the final
artifact it is complete or absent: copied beside its place under a hidden name, then renamed into
it, and only then recorded; a row whose commit fails takes its folder back out.
"""

import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from core.models import Checkpoint as CheckpointRow
from core.models import new_id
from core.settings import Settings
from tuning.checkpoints import Checkpoint
from worker.lifecycle import Attempt, JobFailure
from worker.progress import json_safe
from worker.publish import ArtifactFile, describe_files

logger = logging.getLogger(__name__)


def checkpoints_dir(root: Path, job_id: str) -> Path:
    """A job's checkpoints under Settings.checkpoints_dir (the API reads them there too)."""
    return root / job_id


class CheckpointPublisher:
    """tuning.run's on_checkpoint: stores each checkpoint under checkpoints/<job_id>/, drops old ones."""

    def __init__(self, attempt: Attempt, *, checkpoints_dir: Path) -> None:
        self.attempt = attempt
        self.job_id = attempt.row_id
        self.root = checkpoints_dir

    def __call__(self, checkpoint: Checkpoint, dropped: Sequence[int]) -> None:
        self._publish(checkpoint)
        if dropped:
            self._drop(dropped)

    def _publish(self, checkpoint: Checkpoint) -> None:
        checkpoint_id = new_id("ckpt")
        root = checkpoints_dir(self.root, self.job_id)
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f".{checkpoint_id}-incoming"
        try:
            shutil.copytree(checkpoint.path, staging)
            files = describe_files(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        target = root / checkpoint_id
        os.rename(staging, target)
        try:
            # A retried job may have kept this step before: its row (and folder) give way to this one.
            replaced = self._record(checkpoint_id, checkpoint, files)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        for old in replaced:
            if old != checkpoint_id:  # a retried commit that had gone through replaces its own row
                _remove(root / old)
        logger.info("job %s: checkpoint %s of step %d published", self.job_id, checkpoint_id, checkpoint.step)

    def _record(self, checkpoint_id: str, checkpoint: Checkpoint, files: Sequence[ArtifactFile]) -> list[str]:
        def record(session: Session) -> list[str]:
            replaced = self._delete_rows(session, [checkpoint.step])
            session.add(
                CheckpointRow(
                    id=checkpoint_id,
                    job_id=self.job_id,
                    step=checkpoint.step,
                    epoch=checkpoint.epoch,
                    metrics=json_safe(dict(checkpoint.metrics)),
                    files=[{"name": f.name, "bytes": f.bytes, "sha256": f.sha256} for f in files],
                    bytes=sum(f.bytes for f in files),
                )
            )
            return replaced

        return self.attempt.write(record, what=f"recording the checkpoint of step {checkpoint.step}")

    def _drop(self, steps: Sequence[int]) -> None:
        dropped = self.attempt.write(
            lambda session: self._delete_rows(session, steps), what="dropping checkpoints"
        )
        root = checkpoints_dir(self.root, self.job_id)
        for checkpoint_id in dropped:
            _remove(root / checkpoint_id)

    def _delete_rows(self, session: Session, steps: Sequence[int]) -> list[str]:
        """Delete this job's rows of `steps`; returns their ids, whose folders go once committed."""
        where = (CheckpointRow.job_id == self.job_id, CheckpointRow.step.in_(list(steps)))
        ids = list(session.scalars(select(CheckpointRow.id).where(*where)))
        if ids:
            session.execute(delete(CheckpointRow).where(*where))
        return ids


def checkpoint_folder(sessions: sessionmaker[Session], settings: Settings, checkpoint_id: str) -> Path:
    """The stored artifact folder of checkpoint `checkpoint_id`; JobFailure if it is gone."""
    with sessions() as session:
        row = session.get(CheckpointRow, checkpoint_id)
        job_id = row.job_id if row is not None else None
    folder = checkpoints_dir(settings.checkpoints_dir, job_id) / checkpoint_id if job_id is not None else None
    if folder is None or not folder.is_dir():
        raise JobFailure(
            "checkpoint_not_found",
            f"checkpoint {checkpoint_id} is no longer stored (its job kept newer ones, or it was deleted)",
            param="from_checkpoint",
        )
    return folder


def _remove(folder: Path) -> None:
    # Renamed aside first, so a crash while deleting never leaves half a checkpoint at its path.
    if not folder.exists():
        return
    aside = folder.with_name(f".{folder.name}-dropped-{uuid.uuid4().hex[:8]}")
    os.rename(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)
