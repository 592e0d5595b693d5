"""Publishing checkpoints as a job writes them, and finding one for a job that starts from it."""

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings
from tuning.checkpoints import Checkpoint


class CheckpointPublisher:
    """tuning.run's on_checkpoint: stores each checkpoint under the job's artifacts, drops old ones."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, *, artifacts_dir: Path) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.artifacts_dir = artifacts_dir

    def __call__(self, checkpoint: Checkpoint, dropped: Sequence[int]) -> None:
        raise NotImplementedError("checkpoint publishing: to be built")


def checkpoint_folder(sessions: sessionmaker[Session], settings: Settings, checkpoint_id: str) -> Path:
    """The stored artifact folder of checkpoint `checkpoint_id`; JobFailure if it is gone."""
    raise NotImplementedError("from_checkpoint: to be built")
