"""The webhook sender: works through the outbox (core/webhook_outbox.py), at least once per delivery.

Every worker process runs it in a daemon thread of its main process, every `webhook_poll_seconds`,
beside the sweep but not inside it: a receiver that takes its whole timeout must not hold back the
sweep that rescues the jobs of dead workers. It polls the database rather than being a Celery task
because the outbox already is the durable queue: nothing needs to reach the broker (the embedded
filesystem broker and a restarted Redis alike), and an hour's backoff is a timestamp in a row, not a
message with an ETA held in some worker's memory.

An attempt is claimed by one conditional UPDATE that raises `attempts` from the number seen (of
several senders, one wins) and pushes `next_attempt_at` past the attempt's longest possible run, so
a sender that dies mid-attempt leaves the delivery due again later. Its outcome is recorded under the
same fence (`attempts` still the claimed number), then the delivery is delivered (a 2xx), due again
after the next delay of `webhook_retry_seconds`, or failed once none is left. A receiver may see a
delivery twice (a sender died after the POST, before recording it): `webhook-id` is the same on
every attempt, for it to drop the duplicate.
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import lasting_sessions
from core.models import WebhookDelivery, WebhookDeliveryStatus, WebhookSecret, utcnow
from core.settings import Settings
from core.webhook_signing import signed_headers
from core.webhook_urls import HostPolicy, Resolver, WebhookUrlError, parse_webhook_url
from worker.webhook_http import Outcome, post

logger = logging.getLogger(__name__)

PENDING = WebhookDeliveryStatus.PENDING
# Deliveries a pass looks at, and how many it sends at once (one slow receiver holds up only its own).
BATCH = 50
PARALLEL = 4


def max_attempts(settings: Settings) -> int:
    """The first attempt, and one after each retry delay."""
    return 1 + len(settings.webhook_retry_seconds)


def attempt_lease(settings: Settings) -> timedelta:
    # Connect, send and read each get the timeout; after that a claimed attempt is surely over.
    return timedelta(seconds=3 * settings.webhook_timeout_seconds + 5)


class WebhookSender:
    """Deliveries that are due, sent from a daemon thread; `send_due()` is one pass (tests call it)."""

    def __init__(self, settings: Settings, *, resolve: Resolver | None = None) -> None:
        self.settings = settings
        self.policy = HostPolicy.from_entries(settings.webhook_allowed_hosts)
        self._resolve = resolve
        self._sessions, self._engine = lasting_sessions(settings)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deltatune-webhooks", daemon=True)

    def start(self) -> "WebhookSender":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            # Not a whole attempt's timeout: shutdown must be quick, and an attempt cut short is made
            # again once its claim runs out (the receiver dedupes on webhook-id).
            self._thread.join(timeout=5)
        self._engine.dispose()

    def send_due(self) -> list[str]:
        """Attempt every due delivery once; the ids this sender attempted (claimed)."""
        sessions = self._sessions
        due = self._due(sessions)
        if not due:
            return []
        with ThreadPoolExecutor(max_workers=min(PARALLEL, len(due))) as pool:
            attempted = list(pool.map(lambda row: self._attempt(sessions, *row), due))
        return [delivery_id for delivery_id in attempted if delivery_id is not None]

    def _due(self, sessions: sessionmaker[Session]) -> list[tuple[str, int]]:
        with sessions() as session:
            rows = session.execute(
                select(WebhookDelivery.id, WebhookDelivery.attempts)
                .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= utcnow())
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(BATCH)
            ).all()
        return [(delivery_id, attempts) for delivery_id, attempts in rows]

    def _attempt(self, sessions: sessionmaker[Session], delivery_id: str, seen: int) -> str | None:
        """Claim attempt seen + 1 of the delivery, make it and record it; None if another sender won."""
        if seen >= max_attempts(self.settings):
            # Its last attempt was claimed and never recorded (the sender stopped): nothing is left.
            _settle(sessions, delivery_id, seen, Outcome(None, "the last attempt's sender stopped", 0.0))
            return None
        number = seen + 1
        claimed = _claim(sessions, delivery_id, seen, lease=attempt_lease(self.settings))
        if claimed is None:
            return None
        outcome = self._send(claimed)
        status = self._record(sessions, delivery_id, number, outcome)
        level = logging.INFO if outcome.delivered else logging.WARNING
        logger.log(level, "webhook %s attempt %d to %s: %s", delivery_id, number, claimed["url"], status)
        return delivery_id

    def _send(self, claimed: dict[str, Any]) -> Outcome:
        started = time.monotonic()
        try:
            target = parse_webhook_url(claimed["url"])
            addresses = self.policy.addresses(target, self._resolve)
        except WebhookUrlError as refused:
            return Outcome(None, f"not sent: {refused}", time.monotonic() - started)
        secret = claimed["secret"]
        if secret is None:
            return Outcome(None, "not sent: the owner has no webhook signing secret", 0.0)
        body = claimed["body"].encode()
        headers = signed_headers(secret, claimed["id"], int(time.time()), body)
        return post(target, addresses, headers, body, timeout=self.settings.webhook_timeout_seconds)

    def _record(
        self, sessions: sessionmaker[Session], delivery_id: str, number: int, outcome: Outcome
    ) -> str:
        retry = self.settings.webhook_retry_seconds
        delay = retry[number - 1] if not outcome.delivered and number <= len(retry) else None
        recorded = _settle(sessions, delivery_id, number, outcome, retry_after=delay)
        if recorded is None:
            return "outcome not recorded (the delivery changed meanwhile)"
        detail = outcome.error or f"HTTP {outcome.status_code}"
        return f"{recorded} ({detail})" + (f", next attempt in {delay:g}s" if delay is not None else "")

    def _run(self) -> None:
        while not self._stopped.wait(self.settings.webhook_poll_seconds):
            try:
                self.send_due()
            except Exception:
                # The database may be down: the deliveries wait in their table for the next pass.
                logger.exception(
                    "webhook pass failed; trying again in %gs", self.settings.webhook_poll_seconds
                )


def _claim(
    sessions: sessionmaker[Session], delivery_id: str, seen: int, *, lease: timedelta
) -> dict[str, Any] | None:
    """Attempt seen + 1, if it is still this one's to make: the row's url, body, id and the owner's
    current secret (a rotated secret signs the retries too)."""
    now = utcnow()
    with sessions.begin() as session:
        claimed = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == PENDING,
                WebhookDelivery.attempts == seen,
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(attempts=seen + 1, last_attempt_at=now, next_attempt_at=now + lease)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        row = session.execute(
            select(WebhookDelivery.url, WebhookDelivery.body, WebhookSecret.secret)
            .outerjoin(WebhookSecret, WebhookSecret.owner_id == WebhookDelivery.owner_id)
            .where(WebhookDelivery.id == delivery_id)
        ).one()
    return {"id": delivery_id, "url": row.url, "body": row.body, "secret": row.secret}


def _settle(
    sessions: sessionmaker[Session],
    delivery_id: str,
    number: int,
    outcome: Outcome,
    *,
    retry_after: float | None = None,
) -> str | None:
    """Record attempt `number`'s outcome, fenced on it; the delivery's new status, None if fenced out."""
    now = utcnow()
    entry = {
        "attempt": number,
        "at": round(now.timestamp(), 3),
        "status_code": outcome.status_code,
        "error": outcome.error,
        "seconds": round(outcome.seconds, 3),
    }
    values: dict[str, Any] = {"last_status_code": outcome.status_code, "last_error": outcome.error}
    next_at: datetime | None = None
    if outcome.delivered:
        status = WebhookDeliveryStatus.DELIVERED
        values["delivered_at"] = now
    elif retry_after is not None:
        status, next_at = PENDING, now + timedelta(seconds=retry_after)
    else:
        status = WebhookDeliveryStatus.FAILED
    fence = (
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.attempts == number,
        WebhookDelivery.status == PENDING,
    )
    with sessions.begin() as session:
        log = session.scalar(select(WebhookDelivery.log).where(*fence))
        if log is None:
            return None
        changed = session.execute(
            update(WebhookDelivery)
            .where(*fence)
            .values(status=status, next_attempt_at=next_at, log=[*log, entry], **values)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            return None
    return str(status)
