"""A running attempt's heartbeat: a thread that renews its lease and reads its cancel and pause flags.

Every `heartbeat_seconds` one conditional UPDATE (worker.lifecycle.Attempt.renew) pushes the lease
forward and returns `cancel_requested` and `pause_requested`. The training loop asks `should_stop()`
before every step; it turns true when a client asked to cancel, when the attempt lost its job (the
UPDATE matched no row: another attempt holds it, or it ended), or when the database has been
unavailable for longer than `database_outage_seconds`. A pause is two steps: once it is seen,
`pause_wanted()` makes the next step boundary write a resume point, and only when that point is kept
(`point_kept`) does `should_stop()` turn true, so the paused job goes on from exactly there. Which
one it was, `reason` says; the attempt then records a cancel, a pause, writes nothing at all, or
fails with `database_unavailable`.
"""

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from core.db import database_unavailable
from worker.lifecycle import Attempt, LostLease

logger = logging.getLogger(__name__)


class StopReason(StrEnum):
    CANCEL_REQUESTED = "cancel_requested"
    PAUSE_REQUESTED = "pause_requested"
    LOST_LEASE = "lost_lease"
    DATABASE_OUTAGE = "database_outage"


class Heartbeat:
    """Use as `with Heartbeat(attempt, every_seconds=...) as heartbeat:` and pass
    `heartbeat.should_stop` to tuning.run."""

    def __init__(
        self,
        attempt: Attempt,
        *,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempt = attempt
        self.every_seconds = every_seconds
        self.clock = clock
        self.reason: StopReason | None = None
        self.paused_at: int | None = None  # the step of the resume point kept for a pause
        self._pause_seen = False
        self._renewed_at = clock()  # the claim gave the lease
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{attempt.row_id}-{attempt.number}", daemon=True
        )

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=max(5.0, 2 * self.every_seconds))

    def should_stop(self) -> bool:
        return self.reason is not None

    def pause_wanted(self) -> bool:
        """A pause was asked and no other stop came first: the next step boundary keeps a resume point."""
        return self._pause_seen and self.reason is None

    def point_kept(self, step: int) -> None:
        """A resume point of `step` is stored; with a pause wanted, training stops right here."""
        if self.pause_wanted():
            self.paused_at = step
            self.reason = StopReason.PAUSE_REQUESTED

    @property
    def lost(self) -> bool:
        return self.reason is StopReason.LOST_LEASE

    def beat(self) -> None:
        """One renewal; the thread calls it every `every_seconds` (tests may call it directly)."""
        if self.reason in (StopReason.LOST_LEASE, StopReason.DATABASE_OUTAGE):
            return
        try:
            requests = self.attempt.renew()
        except LostLease:
            logger.warning(
                "%s lost its lease; stopping without writing anything more", self.attempt.describe()
            )
            self.reason = StopReason.LOST_LEASE
            return
        except Exception as error:
            outage = self.clock() - self._renewed_at
            if database_unavailable(error):
                logger.warning(
                    "%s: heartbeat failed (%s), %.1fs without one", self.attempt.describe(), error, outage
                )
            else:
                logger.exception("%s: heartbeat failed", self.attempt.describe())
            if outage >= self.attempt.outage_seconds:
                self.reason = StopReason.DATABASE_OUTAGE
            return
        self._renewed_at = self.clock()
        # A cancel outranks a pause, even one whose resume point is already kept.
        if requests.cancel and self.reason in (None, StopReason.PAUSE_REQUESTED):
            self.reason = StopReason.CANCEL_REQUESTED
        if requests.pause:
            self._pause_seen = True

    def _run(self) -> None:
        while not self._stopped.wait(self.every_seconds):
            self.beat()
            if self.reason in (StopReason.LOST_LEASE, StopReason.DATABASE_OUTAGE):
                return
