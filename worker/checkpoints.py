"""Publishing checkpoints as a job writes them, and finding one for a job that starts from it.

A checkpoint lives at `checkpoints/<job_id>/<checkpoint id>/` in the store (core.storage). Like the
final artifact it is complete or absent: stored under its new id (in the data folder copied beside its
place under a hidden name, then renamed into it), and only then recorded; a row whose commit fails
takes its folder back out. Nothing reads a checkpoint's files before its row names them.
"""

import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from core.models import Checkpoint as CheckpointRow
from core.models import new_id
from core.storage import Storage
from core.storage.keys import checkpoint_prefix
from tuning.checkpoints import Checkpoint
from worker.lifecycle import Attempt, JobFailure
from worker.progress import json_safe
from worker.publish import ArtifactFile, describe_files

logger = logging.getLogger(__name__)


class CheckpointPublisher:
    """tuning.run's on_checkpoint: stores each checkpoint under checkpoints/<job_id>/, drops old ones."""

    def __init__(self, attempt: Attempt, *, storage: Storage) -> None:
        self.attempt = attempt
        self.job_id = attempt.row_id
        self.storage = storage

    def __call__(self, checkpoint: Checkpoint, dropped: Sequence[int]) -> None:
        self._publish(checkpoint)
        if dropped:
            self._drop(dropped)

    def _publish(self, checkpoint: Checkpoint) -> None:
        checkpoint_id = new_id("ckpt")
        files = describe_files(checkpoint.path)
        target = checkpoint_prefix(self.job_id, checkpoint_id)
        self.storage.publish_folder(checkpoint.path, target, move=False)  # tuning keeps its own
        try:
            # A retried job may have kept this step before: its row (and folder) give way to this one.
            replaced = self._record(checkpoint_id, checkpoint, files)
        except BaseException:
            self.storage.remove_folder(target)
            raise
        for old in replaced:
            if old != checkpoint_id:  # a retried commit that had gone through replaces its own row
                self.storage.remove_folder(checkpoint_prefix(self.job_id, old))
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
        for checkpoint_id in dropped:
            self.storage.remove_folder(checkpoint_prefix(self.job_id, checkpoint_id))

    def _delete_rows(self, session: Session, steps: Sequence[int]) -> list[str]:
        """Delete this job's rows of `steps`; returns their ids, whose folders go once committed."""
        where = (CheckpointRow.job_id == self.job_id, CheckpointRow.step.in_(list(steps)))
        ids = list(session.scalars(select(CheckpointRow.id).where(*where)))
        if ids:
            session.execute(delete(CheckpointRow).where(*where))
        return ids


def checkpoint_folder(
    sessions: sessionmaker[Session], storage: Storage, checkpoint_id: str, *, scratch: Path
) -> Path:
    """A local folder holding checkpoint `checkpoint_id`'s artifact (the stored one, or a download into
    `scratch`); JobFailure if it is gone."""
    with sessions() as session:
        row = session.get(CheckpointRow, checkpoint_id)
        job_id = row.job_id if row is not None else None
    folder = None
    if job_id is not None:
        folder = storage.local_folder(checkpoint_prefix(job_id, checkpoint_id), scratch)
    if folder is None:
        raise JobFailure(
            "checkpoint_not_found",
            f"checkpoint {checkpoint_id} is no longer stored (its job kept newer ones, or it was deleted)",
            param="from_checkpoint",
        )
    return folder
