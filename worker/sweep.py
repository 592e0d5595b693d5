"""The sweep: what makes a job survive a dead worker or a lost message. Every worker process runs it
in a thread (started when the worker is ready), every `sweep_seconds`, and once at its start:

1. running rows whose lease expired (their worker died or froze): back to queued and sent again, or
   `cancelled` when a client had asked for it (worker.lifecycle.Lifecycle.requeue_expired);
2. queued rows whose message may have been lost (a broker restarted without persistence, a send
   that failed): sent again once their last message is older than `resend_after_seconds`, doubling
   each time; at worker start every queued row is sent again;
3. folders of attempts that are not current (worker.scratch.sweep_leftovers);
4. and, apart from the sweep itself, what else the worker does as often (`also`): it marks its
   published figures seen (worker.machine_figures).

A dead worker's job is queued again at most lease_seconds + sweep_seconds after its last heartbeat.
Sweeps of several workers may race: each row is moved by one conditional UPDATE, and the claim makes
a duplicate message harmless.

After a sweep that could not reach the database, this worker expires no lease for one whole lease
period once the database answers again: while it was down no attempt could renew, so every lease
looks expired, but the live attempts are retrying and renew within a heartbeat of its return.
Without that grace, every outage longer than a lease would restart every running job from its
latest resume point.
"""

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from core.db import lasting_sessions, sessions_for
from core.dispatch import make_celery
from core.settings import Settings
from worker.lifecycle import JOBS, RUNS
from worker.scratch import sweep_leftovers

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def sweep(
    settings: Settings,
    celery: Celery,
    *,
    at_start: bool = False,
    expire_leases: bool = True,
    sessions: sessionmaker[Session] | None = None,
) -> SweepReport:
    """One sweep of jobs and transferability runs; `at_start` re-sends every queued row and also
    clears published folders no row names; `expire_leases` False leaves running rows alone. Without
    `sessions`, on an engine of its own."""
    if sessions is None:
        with sessions_for(settings) as own:
            return sweep(settings, celery, at_start=at_start, expire_leases=expire_leases, sessions=own)
    report = SweepReport()
    for lifecycle in (JOBS, RUNS):
        if expire_leases:
            report.requeued += lifecycle.requeue_expired(sessions, celery)
        after = None if at_start else settings.resend_after_seconds
        report.resent += lifecycle.resend_queued(sessions, celery, after_seconds=after)
    report.removed = sweep_leftovers(sessions, settings, artifacts=at_start)
    return report


class Sweeper:
    """The sweep in a daemon thread of the worker's main process, with its own sending Celery app."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        also: Callable[[sessionmaker[Session]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.also = also
        self.celery = make_celery(settings)
        self.sessions, self._engine = lasting_sessions(settings)
        self._clock = clock
        # Leases are expired only from this moment on: infinity while the database is unreachable.
        self._expire_from = 0.0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deltatune-sweep", daemon=True)

    def start(self) -> "Sweeper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._engine.dispose()

    def sweep_once(self, *, at_start: bool = False) -> SweepReport | None:
        self._also()
        expire_leases = self._clock() >= self._expire_from
        try:
            report = sweep(
                self.settings,
                self.celery,
                at_start=at_start,
                expire_leases=expire_leases,
                sessions=self.sessions,
            )
        except Exception:
            # The database or the broker may be down: the next sweep tries again.
            logger.exception("the sweep failed; trying again in %gs", self.settings.sweep_seconds)
            self._expire_from = math.inf
            return None
        if self._expire_from == math.inf:
            self._expire_from = self._clock() + self.settings.lease_seconds
            logger.info(
                "the sweep reaches the database again; leases expire again in %gs, once live attempts "
                "have renewed theirs",
                self.settings.lease_seconds,
            )
        return report

    def _also(self) -> None:
        # Apart from the sweep: its failure must not count as the database's (no leases expire then).
        if self.also is None:
            return
        try:
            self.also(self.sessions)
        except Exception:
            logger.exception("the sweep's companion failed; trying again in %gs", self.settings.sweep_seconds)

    def _run(self) -> None:
        while not self._stopped.wait(self.settings.sweep_seconds):
            self.sweep_once()
