"""A job's latest resume point, kept across its attempts in the store at `resume/<job_id>/step-<k>/`.

tuning.run writes each point in the attempt's scratch folder, complete or absent (tuning.resume);
`ResumeStore.keeper` gives its `on_resume_point`: fenced by the attempt (a stale attempt stops there,
with LostLease, and stores nothing), it stores the point (one rename in the data folder; in S3 its
manifest.json last, so a point without its manifest is one cut short) and only then deletes the older
ones, so a kill at any moment leaves the latest complete point there. The next attempt of the job,
on this host or another, resumes from `latest()`; the folder goes when the job ends.
"""

import logging
import re
import shutil
from pathlib import Path

from core.storage import MANIFEST, Storage
from core.storage.keys import join, resume_prefix
from tuning.errors import ResumeMismatch
from tuning.resume import ResumePoint
from worker.lifecycle import Attempt

logger = logging.getLogger(__name__)

PREFIX = "step-"
_STEP = re.compile(rf"^{PREFIX}(?P<step>\d+)$")


class ResumeStore:
    def __init__(self, storage: Storage, job_id: str) -> None:
        self.storage = storage
        self.prefix = resume_prefix(job_id)

    def stored(self) -> list[tuple[int, str]]:
        """The (step, folder name) of the points stored, complete or not, oldest first."""
        found = (_STEP.match(name) for name in self.storage.folders(self.prefix))
        return sorted((int(match["step"]), match.string) for match in found if match)

    def point_key(self, name: str) -> str:
        return join(self.prefix, name)

    def is_complete(self, name: str) -> bool:
        return self.storage.stat(join(self.point_key(name), MANIFEST)) is not None

    def latest(self, scratch: Path) -> ResumePoint | None:
        """The newest complete point, read where it is stored or from a download into `scratch`."""
        for _, name in reversed(self.stored()):
            folder = self.storage.local_folder(self.point_key(name), scratch)
            try:
                return ResumePoint.read(folder) if folder is not None else None
            except (ResumeMismatch, ValueError, KeyError):
                logger.warning("ignoring %s of %s: not a complete resume point", name, self.prefix)
        return None

    def keeper(self, attempt: Attempt) -> "PointKeeper":
        return PointKeeper(self, attempt)

    def remove(self) -> None:
        self.storage.remove_folder(self.prefix)


class PointKeeper:
    """tuning.ResumeOptions' `on_resume_point` for one attempt."""

    def __init__(self, store: ResumeStore, attempt: Attempt) -> None:
        self.store, self.attempt = store, attempt

    def __call__(self, point: ResumePoint) -> None:
        # The fence renews the lease: no other attempt can claim the job for lease_seconds, far
        # longer than storing the point and the deletes below take.
        self.attempt.write(lambda session: None, what=f"keeping the resume point of step {point.step}")
        store, name = self.store, point.folder.name
        if store.is_complete(name):  # kept before, by an attempt that died after it: the same state
            shutil.rmtree(point.folder, ignore_errors=True)
        else:
            store.storage.remove_folder(store.point_key(name))  # an upload cut short, if any
            store.storage.publish_folder(point.folder, store.point_key(name), move=True)
        for step, older in store.stored():
            if step < point.step:
                store.storage.remove_folder(store.point_key(older))
        logger.info("%s: resume point of step %d kept", self.attempt.describe(), point.step)
