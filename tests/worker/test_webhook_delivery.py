"""Webhook delivery against a real receiver on a loopback port: signed the Standard Webhooks way,
retried with backoff, given up after the last attempt, sent once by one of two racing senders, and
written to the outbox exactly when a job's end is committed."""

import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from ipaddress import ip_address
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from core.dispatch import enqueue_job, make_celery
from core.models import Job, JobStatus, WebhookDelivery, WebhookEndpoint, WebhookSecret
from core.settings import Settings
from core.webhook_signing import new_secret
from tests.worker.jobs import add_job, claim, expire_lease, job_row
from tests.worker.processes import WorkerProcess, clean_environment, wait_for
from tests.worker.receiver import HANG, Receiver
from worker import webhook_sender
from worker.lifecycle import JOBS, JobFailure, LostLease
from worker.webhook_sender import WebhookSender


@pytest.fixture()
def hook_settings(settings: Settings) -> Settings:
    """Loopback allowed (the receiver is there), and a backoff of tenths of seconds."""
    return settings.model_copy(
        update={
            "webhook_allowed_hosts": ["loopback"],
            "webhook_retry_seconds": [0.2, 0.4],
            "webhook_timeout_seconds": 0.5,
            "webhook_poll_seconds": 0.05,
        }
    )


def subscribe(sessions: sessionmaker[Session], job_id: str, url: str) -> str:
    """Give the job's owner a signing secret and an endpoint at `url`; returns the secret."""
    secret = new_secret()
    with sessions.begin() as session:
        owner_id = session.get_one(Job, job_id).owner_id
        session.add(WebhookSecret(owner_id=owner_id, secret=secret))
        session.add(WebhookEndpoint(owner_id=owner_id, url=url))
    return secret


def deliveries(sessions: sessionmaker[Session], job_id: str) -> list[WebhookDelivery]:
    with sessions() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.id)
        return list(session.scalars(query))


def the_delivery(sessions: sessionmaker[Session], job_id: str) -> WebhookDelivery:
    (delivery,) = deliveries(sessions, job_id)
    return delivery


def settled(sessions: sessionmaker[Session], job_id: str) -> WebhookDelivery | None:
    """The job's one delivery once it is delivered or failed; None before (or before the job ends)."""
    found = deliveries(sessions, job_id)
    return found[0] if len(found) == 1 and found[0].status != "pending" else None


def succeed(sessions: sessionmaker[Session], job_id: str) -> None:
    claim(sessions, job_id).succeed(trained_tokens=123)


def test_a_delivery_is_signed_so_the_receiver_verifies_it_with_the_secret(
    hook_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    job_id = add_job(sessions, hook_settings)
    with Receiver([200]) as receiver:
        secret = subscribe(sessions, job_id, receiver.url)
        succeed(sessions, job_id)
        assert WebhookSender(hook_settings).send_due() == [the_delivery(sessions, job_id).id]
    (request,) = receiver.received
    # The Standard Webhooks reference library accepts it ...
    payload = Webhook(secret).verify(request.body, request.headers)
    # ... and so does the spec's recipe by hand: base64 HMAC-SHA256 of "{id}.{timestamp}.{body}".
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    )
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == expected
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(request.body, request.headers)

    delivery = the_delivery(sessions, job_id)
    assert request.headers["webhook-id"] == payload["id"] == delivery.id
    assert request.headers["content-type"] == "application/json" and request.path == "/hooks"
    assert payload["type"] == "fine_tuning.job.succeeded" and payload["object"] == "event"
    assert payload["data"]["id"] == job_id and payload["data"]["status"] == "succeeded"
    assert payload["data"]["trained_tokens"] == 123 and payload["data"]["error"] is None
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    assert [entry["status_code"] for entry in delivery.log] == [200]


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers_2xx(
    hook_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    job_id = add_job(sessions, hook_settings)
    with Receiver([500, 200]) as receiver:
        secret = subscribe(sessions, job_id, receiver.url)
        claim(sessions, job_id).fail(JobFailure("bad_data", "line 3 has no label", param="training_file"))
        sender = WebhookSender(hook_settings).start()
        try:
            delivery = wait_for(
                lambda: settled(sessions, job_id), timeout=10, what="the delivery", log=lambda: ""
            )
        finally:
            sender.stop()
    assert delivery.status == "delivered" and delivery.attempts == 2
    assert [(e["attempt"], e["status_code"], e["error"]) for e in delivery.log] == [
        (1, 500, "HTTP 500"),
        (2, 200, None),
    ]
    first, second = receiver.received
    assert second.at - first.at >= 0.2  # the first retry delay
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.id  # one id to dedupe on
    assert first.body == second.body
    for request in receiver.received:
        Webhook(secret).verify(request.body, request.headers)
    data = json.loads(second.body)["data"]
    assert json.loads(second.body)["type"] == "fine_tuning.job.failed"
    assert data["error"] == {"code": "bad_data", "message": "line 3 has no label", "param": "training_file"}


def test_a_receiver_that_never_answers_fails_after_the_last_attempt(
    hook_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    settings = hook_settings.model_copy(
        update={"webhook_timeout_seconds": 0.3, "webhook_retry_seconds": [0.1, 0.1]}
    )
    job_id = add_job(sessions, settings)
    with Receiver([HANG], hang_seconds=2) as receiver:
        subscribe(sessions, job_id, receiver.url)
        succeed(sessions, job_id)
        sender = WebhookSender(settings)
        started = time.monotonic()
        while settled(sessions, job_id) is None and time.monotonic() - started < 10:
            sender.send_due()
            time.sleep(0.02)
    delivery = the_delivery(sessions, job_id)
    assert delivery.status == "failed" and delivery.attempts == 3 and len(receiver.received) == 3
    assert delivery.last_error == "no answer within 0.3s" and delivery.last_status_code is None
    assert delivery.next_attempt_at is None
    assert [entry["attempt"] for entry in delivery.log] == [1, 2, 3]
    assert all(entry["seconds"] >= 0.3 for entry in delivery.log)


def test_a_closed_port_and_a_redirect_are_failed_attempts(
    hook_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    settings = hook_settings.model_copy(update={"webhook_retry_seconds": []})
    job_id = add_job(sessions, settings)
    closed_port = "http://127.0.0.1:1/x"
    with Receiver([302]) as receiver:
        subscribe(sessions, job_id, receiver.url)
        with sessions.begin() as session:  # the job's own URL, beside its owner's endpoint
            session.execute(update(Job).where(Job.id == job_id).values(webhook_url=closed_port))
        succeed(sessions, job_id)
        assert len(WebhookSender(settings).send_due()) == 2
    assert len(receiver.received) == 1
    by_url = {delivery.url: delivery for delivery in deliveries(sessions, job_id)}
    redirected, refused = by_url[receiver.url], by_url[closed_port]
    # The redirect (to a closed port) was not followed: the 302 itself is the attempt's outcome.
    assert (redirected.status, redirected.last_status_code) == ("failed", 302)
    assert "redirects are not followed" in (redirected.last_error or "")
    assert (refused.status, refused.last_status_code) == ("failed", None)
    assert refused.last_error == "could not connect to 127.0.0.1 port 1: connection refused"
    assert refused.endpoint_id is None and redirected.endpoint_id is not None


def test_a_name_that_resolves_inside_the_network_is_not_sent_to(
    hook_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    settings = hook_settings.model_copy(
        update={"webhook_allowed_hosts": ["external"], "webhook_retry_seconds": []}
    )
    job_id = add_job(sessions, settings)
    with Receiver([200]) as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        subscribe(sessions, job_id, f"http://rebind.example.com:{port}/hooks")
        succeed(sessions, job_id)
        rebinding = WebhookSender(settings, resolve=lambda host, port: [ip_address("127.0.0.1")])
        rebinding.send_due()
    assert receiver.received == []
    delivery = the_delivery(sessions, job_id)
    assert delivery.status == "failed"
    assert delivery.last_error is not None and delivery.last_error.startswith(
        "not sent: rebind.example.com (127.0.0.1) is a loopback address"
    )


def test_two_senders_never_make_the_same_attempt(
    hook_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    job_id = add_job(sessions, hook_settings)
    with Receiver([200]) as receiver:
        subscribe(sessions, job_id, receiver.url)
        succeed(sessions, job_id)
        senders = [WebhookSender(hook_settings) for _ in range(4)]
        attempted: list[list[str]] = []
        start = threading.Barrier(len(senders))

        def race(sender: WebhookSender) -> None:
            start.wait()
            attempted.append(sender.send_due())

        threads = [threading.Thread(target=race, args=(sender,)) for sender in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    assert len(receiver.received) == 1
    assert sorted(sum(attempted, [])) == [the_delivery(sessions, job_id).id]
    assert the_delivery(sessions, job_id).attempts == 1


def test_an_attempt_whose_sender_died_is_made_again_with_the_same_id(
    hook_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    job_id = add_job(sessions, hook_settings)
    with Receiver([200]) as receiver:
        subscribe(sessions, job_id, receiver.url)
        succeed(sessions, job_id)
        delivery_id = the_delivery(sessions, job_id).id
        # A sender claims attempt 1 and dies before it posts or records anything.
        assert webhook_sender._claim(sessions, delivery_id, 0, lease=timedelta(seconds=0.3)) is not None
        sender = WebhookSender(hook_settings)
        assert sender.send_due() == []  # its lease holds: not due yet
        time.sleep(0.35)
        assert sender.send_due() == [delivery_id]
    (request,) = receiver.received
    assert request.headers["webhook-id"] == delivery_id
    delivery = the_delivery(sessions, job_id)
    assert delivery.status == "delivered" and delivery.attempts == 2


def test_the_outbox_row_exists_exactly_when_the_end_is_committed(
    hook_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    job_id = add_job(sessions, hook_settings)
    subscribe(sessions, job_id, "http://127.0.0.1:9/hooks")
    attempt = claim(sessions, job_id)
    with pytest.raises(RuntimeError, match="killed"), sessions.begin() as session:
        assert JOBS.end(session, job_id, attempt.number, JobStatus.SUCCEEDED, "succeeded")
        session.flush()
        inside = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).all()
        assert len(inside) == 1  # written in the ending transaction ...
        raise RuntimeError("killed before the commit")
    # ... and gone with it: neither the end nor its delivery happened.
    assert job_row(sessions, job_id).status == "running" and deliveries(sessions, job_id) == []

    # A stale attempt's end changes nothing, so it writes no delivery either.
    expire_lease(sessions, job_id)
    assert JOBS.requeue_expired(sessions, hook_settings_celery(hook_settings)) == [job_id]
    current = claim(sessions, job_id)
    with pytest.raises(LostLease):
        attempt.succeed()
    assert deliveries(sessions, job_id) == []
    current.cancel()
    assert [d.event for d in deliveries(sessions, job_id)] == ["fine_tuning.job.cancelled"]


def test_the_sweep_cancelling_a_job_whose_worker_stopped_writes_its_delivery(
    hook_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    job_id = add_job(sessions, hook_settings)
    subscribe(sessions, job_id, "http://127.0.0.1:9/hooks")
    claim(sessions, job_id)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    expire_lease(sessions, job_id)
    assert JOBS.requeue_expired(sessions, hook_settings_celery(hook_settings)) == [job_id]
    assert job_row(sessions, job_id).status == "cancelled"
    (delivery,) = deliveries(sessions, job_id)
    assert (
        delivery.event == "fine_tuning.job.cancelled"
        and json.loads(delivery.body)["data"]["status"] == "cancelled"
    )


def hook_settings_celery(settings: Settings) -> Celery:
    return make_celery(settings)


def test_the_embedded_worker_delivers_too(
    hook_settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """`deltatune serve`'s setup: SQLite, the filesystem broker, a real worker process."""
    env = clean_environment(
        DELTATUNE_DATA_DIR=str(hook_settings.data_dir),
        DELTATUNE_MODEL_DIRS=json.dumps([str(path) for path in hook_settings.model_dirs]),
        DELTATUNE_HEARTBEAT_SECONDS="0.2",
        DELTATUNE_WEBHOOK_ALLOWED_HOSTS='["loopback"]',
        DELTATUNE_WEBHOOK_POLL_SECONDS="0.2",
    )
    job_id = add_job(sessions, hook_settings, epochs=1)
    with Receiver([200]) as receiver:
        secret = subscribe(sessions, job_id, receiver.url)
        worker = WorkerProcess(env, tmp_path / "worker.log", hostname="embedded-hooks@localhost").start()
        try:
            worker.wait_ready()
            enqueue_job(make_celery(hook_settings), job_id, "cpu")
            delivery = wait_for(
                lambda: settled(sessions, job_id), timeout=120, what="the webhook", log=worker.log
            )
        finally:
            worker.stop()
    assert job_row(sessions, job_id).status == "succeeded"
    assert delivery.status == "delivered"
    (request,) = receiver.received
    assert Webhook(secret).verify(request.body, request.headers)["type"] == "fine_tuning.job.succeeded"
