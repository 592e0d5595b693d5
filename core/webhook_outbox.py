"""The webhook outbox: a job that ends gets its deliveries in the transaction that ends it.

Every place a job reaches succeeded, failed or cancelled (the worker's end of an attempt, the API's
cancel of a job not started, the sweep's cancel of one whose worker stopped) calls
`record_job_deliveries` in its own transaction, so a crash can neither lose a delivery of an end
that was committed nor invent one for an end that was rolled back. A sender (worker/webhook_sender.py)
POSTs them afterwards.

One delivery per URL: each of the owner's endpoints, and the job's own `webhook_url` unless an
endpoint already names it. The body follows OpenAI's fine-tuning webhooks (`fine_tuning.job.<status>`
with the job in `data`), and is written once, so every retry sends the same bytes.
"""

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Job, JobStatus, WebhookDelivery, WebhookEndpoint, new_id, utcnow

EVENT_BY_STATUS = {
    JobStatus.SUCCEEDED: "fine_tuning.job.succeeded",
    JobStatus.FAILED: "fine_tuning.job.failed",
    JobStatus.CANCELLED: "fine_tuning.job.cancelled",
}
EVENTS = tuple(EVENT_BY_STATUS.values())


def record_job_deliveries(session: Session, job_id: str) -> list[WebhookDelivery]:
    """Add the deliveries of job `job_id`'s end to the caller's transaction (none if it has not
    ended, or nobody asked for webhooks); call it right after the statement that ended the job."""
    job = session.scalars(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).one_or_none()
    if job is None or job.status not in EVENT_BY_STATUS:
        return []
    event = EVENT_BY_STATUS[JobStatus(job.status)]
    endpoints = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.url)
        .where(WebhookEndpoint.owner_id == job.owner_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    ).all()
    targets: list[tuple[str | None, str]] = [(endpoint_id, url) for endpoint_id, url in endpoints]
    if job.webhook_url is not None and job.webhook_url not in {url for _, url in targets}:
        targets.append((None, job.webhook_url))
    now = utcnow()
    deliveries = []
    for endpoint_id, url in targets:
        delivery_id = new_id("msg")
        body = event_body(delivery_id, event, job, now)
        deliveries.append(
            WebhookDelivery(
                id=delivery_id,
                owner_id=job.owner_id,
                job_id=job.id,
                endpoint_id=endpoint_id,
                event=event,
                url=url,
                body=body,
                next_attempt_at=now,
                created_at=now,
                log=[],
            )
        )
    session.add_all(deliveries)
    return deliveries


def event_body(delivery_id: str, event: str, job: Job, now: datetime) -> str:
    """The JSON a receiver gets: what a client would want to act on, never the owner's secrets."""
    error = None
    if job.error_code is not None:
        error = {"code": job.error_code, "message": job.error_message or "", "param": job.error_param}
    data: dict[str, Any] = {
        "id": job.id,
        "object": "fine_tuning.job",
        "status": job.status,
        "base_model": job.base_model,
        "method": job.method,
        "created_at": _unix(job.created_at),
        "finished_at": _unix(job.finished_at),
        "trained_tokens": job.trained_tokens,
        "error": error,
        "metadata": (job.spec or {}).get("metadata") or {},
        "url": f"/v1/jobs/{job.id}",
    }
    payload = {"id": delivery_id, "object": "event", "type": event, "created_at": _unix(now), "data": data}
    return json.dumps(payload, separators=(",", ":"))


def _unix(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    # SQLite hands timestamps back without their zone; every one deltatune writes is UTC.
    return int((moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp())
