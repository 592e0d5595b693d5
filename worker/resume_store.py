"""A job's latest resume point, kept across its attempts in `resume/<job_id>/step-<k>/`.

tuning.run writes each point in the attempt's scratch folder, complete or absent (tuning.resume);
`ResumeStore.keep` is its `on_resume_point`: fenced by the attempt (a stale attempt stops there,
with LostLease, and stores nothing), it renames the point into the job's folder and only then
deletes the older ones, so a kill at any moment leaves the latest complete point there. The next
attempt of the job resumes from `latest()`; the folder goes when the job ends.
"""

import logging
import os
import shutil
from pathlib import Path

from tuning.errors import ResumeMismatch
from tuning.resume import ResumePoint
from worker.lifecycle import Attempt

logger = logging.getLogger(__name__)

PREFIX = "step-"


class ResumeStore:
    def __init__(self, root: Path, job_id: str) -> None:
        self.folder = root / job_id

    def points(self) -> list[ResumePoint]:
        """The complete points stored, oldest first (a hidden name is a rename cut short)."""
        found = []
        for path in self.folder.glob(f"{PREFIX}*") if self.folder.is_dir() else []:
            try:
                found.append(ResumePoint.read(path))
            except (ResumeMismatch, ValueError, KeyError):
                logger.warning("ignoring %s: not a complete resume point", path.name)
        return sorted(found, key=lambda point: point.step)

    def latest(self) -> ResumePoint | None:
        points = self.points()
        return points[-1] if points else None

    def keeper(self, attempt: Attempt) -> "PointKeeper":
        return PointKeeper(self, attempt)

    def remove(self) -> None:
        if self.folder.exists():
            aside = self.folder.with_name(f".{self.folder.name}-removed")
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(self.folder, aside)
            shutil.rmtree(aside, ignore_errors=True)


class PointKeeper:
    """tuning.ResumeOptions' `on_resume_point` for one attempt."""

    def __init__(self, store: ResumeStore, attempt: Attempt) -> None:
        self.store, self.attempt = store, attempt

    def __call__(self, point: ResumePoint) -> None:
        # The fence renews the lease: no other attempt can claim the job for lease_seconds, far
        # longer than the rename and the deletes below take.
        self.attempt.write(lambda session: None, what=f"keeping the resume point of step {point.step}")
        folder = self.store.folder
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / point.folder.name
        if target.exists():  # this step kept before, by an attempt that died after it: the same state
            shutil.rmtree(point.folder, ignore_errors=True)
        else:
            os.rename(point.folder, target)
        for older in self.store.points():
            if older.step < point.step:
                shutil.rmtree(older.folder, ignore_errors=True)
        logger.info("%s: resume point of step %d kept", self.attempt.describe(), point.step)
