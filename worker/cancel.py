"""The training loop's stop check: has a client asked to cancel this running job?

The loop asks before every step; reading the database that often would load it for nothing, so the
flag is re-read at most every `cancel_poll_seconds` and a cancel is seen within that time.
"""

import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.models import Job


class CancelPoller:
    """Use as `should_stop`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        *,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._job_id = job_id
        self._every_seconds = every_seconds
        self._clock = clock
        self._checked_at: float | None = None
        self._requested = False

    def __call__(self) -> bool:
        if self._requested:
            return True  # a cancel is never taken back
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._every_seconds:
            return False
        self._checked_at = now
        with self._sessions() as session:
            self._requested = bool(session.scalar(select(Job.cancel_requested).where(Job.id == self._job_id)))
        return self._requested
