"""/v1/webhooks: endpoints and the signing secret, what a careless or hostile client names as a URL,
a job's own webhook_url, and the deliveries a job's end writes (listed, scoped to their owner)."""

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.models import Job, WebhookDelivery, WebhookSecret
from core.settings import Settings
from core.webhook_outbox import record_job_deliveries
from core.webhook_urls import MAX_URL_LENGTH
from service.app import create_app
from tests.service.conftest import key_headers
from tests.service.helpers import create_job

HOOK = "https://hooks.example.com/deltatune"


def register(client: TestClient, auth: dict[str, str], url: str = HOOK) -> Any:
    return client.post("/v1/webhooks", headers=auth, json={"url": url})


def assert_error(response: Any, status: int, param: str | None, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error
    return error


def stored_secret(app: FastAPI) -> str:
    with app.state.sessionmaker() as session:
        rows = list(session.scalars(select(WebhookSecret)))
    assert len(rows) == 1
    return rows[0].secret


def test_the_first_endpoint_creates_the_secret_and_shows_it_once(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    first = register(client, auth)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["object"] == "webhook_endpoint" and body["url"] == HOOK
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    # Stored as it is (the sender signs with it), never shown again.
    assert stored_secret(app) == body["secret"]
    second = register(client, auth, HOOK + "/2")
    assert second.status_code == 201 and second.json()["secret"] is None
    assert client.get(f"/v1/webhooks/{body['id']}", headers=auth).json()["secret"] is None
    listing = client.get("/v1/webhooks", headers=auth).json()
    assert [e["url"] for e in listing["data"]] == [HOOK + "/2", HOOK]
    assert all(e["secret"] is None for e in listing["data"])


def test_rotating_the_secret_replaces_it(app: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    created = register(client, auth).json()["secret"]
    rotated = client.post("/v1/webhooks/secret", headers=auth)
    assert rotated.status_code == 201, rotated.text
    assert rotated.json()["object"] == "webhook_secret"
    assert rotated.json()["secret"] != created
    assert stored_secret(app) == rotated.json()["secret"]


MALFORMED = [
    ("ftp://example.com/hook", "http or https"),
    ("javascript:alert(1)", "http or https"),
    ("file:///etc/passwd", "http or https"),
    ("example.com/hook", "without a scheme"),
    ("http://", "no host"),
    ("https://user:password@example.com/", "user name or password"),
    ("https://example.com:99999/", "invalid port"),
    ("https://example.com:0/", "invalid port"),
    ("https://exa mple.com/", "spaces"),
    ("https://example.com/\r\nX-Injected: 1", "spaces or control"),
    ("https://ex\u00e4mple.com/", "ASCII"),
    ("https://example.com/#top", "fragment"),
    ("https://exa_$mple.com/", "invalid host"),
    ("", "without a scheme"),
    ("https://example.com/" + "a" * MAX_URL_LENGTH, f"at most {MAX_URL_LENGTH}"),
]
# Addresses inside the server's own network, in the spellings that get around a naive check.
INSIDE = [
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",
    "http://api.localhost/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://0.0.0.0:5432/",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/hook",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
]


def test_a_malformed_url_is_a_400_naming_the_field(client: TestClient, auth: dict[str, str]) -> None:
    for url, says in MALFORMED:
        error = assert_error(register(client, auth, url), 400, "url", "invalid_webhook_url")
        assert says in error["message"] and error["message"].startswith("url: "), (url, error)


def test_an_address_inside_the_network_is_refused_by_default(
    client: TestClient, auth: dict[str, str]
) -> None:
    for url in INSIDE:
        error = assert_error(register(client, auth, url), 400, "url", "invalid_webhook_url")
        assert "webhook_allowed_hosts" in error["message"], (url, error)
    assert client.get("/v1/webhooks", headers=auth).json()["data"] == []


def test_a_non_string_url_or_an_extra_field_is_a_422(client: TestClient, auth: dict[str, str]) -> None:
    assert_error(client.post("/v1/webhooks", headers=auth, json={"url": 3}), 422, "url", "string_type")
    extra = client.post("/v1/webhooks", headers=auth, json={"url": HOOK, "secret": "mine"})
    assert_error(extra, 422, "secret", "extra_forbidden")
    assert client.get("/v1/webhooks", headers=auth).json()["data"] == []


def test_webhook_allowed_hosts_opens_the_loopback_when_it_says_so(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path / "data", webhook_allowed_hosts=["loopback"])
    app = create_app(settings)
    with TestClient(app) as client:
        auth = key_headers(app, "alice")
        assert register(client, auth, "http://127.0.0.1:9/hook").status_code == 201
        assert register(client, auth, "http://localhost:9/hook").status_code == 201
        assert_error(register(client, auth, "http://10.0.0.5/hook"), 400, "url", "invalid_webhook_url")


def test_a_typo_in_webhook_allowed_hosts_fails_at_start() -> None:
    with pytest.raises(ValueError, match="webhook_allowed_hosts.*'10.0.0.0/33'"):
        Settings(webhook_allowed_hosts=["10.0.0.0/33"])
    with pytest.raises(ValueError, match="'privat e'"):
        Settings(webhook_allowed_hosts=["privat e"])


def test_a_url_registered_twice_and_too_many_endpoints_are_409s(
    client: TestClient, auth: dict[str, str]
) -> None:
    assert register(client, auth).status_code == 201
    assert_error(register(client, auth), 409, "url", "webhook_exists")
    for index in range(9):
        assert register(client, auth, f"{HOOK}/{index}").status_code == 201
    assert_error(register(client, auth, HOOK + "/one-more"), 409, None, "too_many_webhooks")


def test_another_owners_endpoints_and_deliveries_are_404s(
    app: FastAPI, client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    endpoint = register(client, auth).json()
    job = create_job(client, auth)
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).status_code == 200
    delivery = client.get("/v1/webhooks/deliveries", headers=auth).json()["data"][0]

    foreign = client.get(f"/v1/webhooks/{endpoint['id']}", headers=other_auth)
    assert_error(foreign, 404, "webhook_id", "webhook_not_found")
    foreign = client.delete(f"/v1/webhooks/{endpoint['id']}", headers=other_auth)
    assert_error(foreign, 404, "webhook_id", "webhook_not_found")
    foreign = client.get(f"/v1/webhooks/deliveries/{delivery['id']}", headers=other_auth)
    assert_error(foreign, 404, "delivery_id", "delivery_not_found")
    assert (
        client.get(f"/v1/webhooks/deliveries/{delivery['id']}", headers=auth).json()["id"] == delivery["id"]
    )
    assert_error(
        client.get("/v1/webhooks/deliveries", headers=other_auth, params={"job_id": job["id"]}),
        404,
        "job_id",
        "job_not_found",
    )
    assert client.get("/v1/webhooks", headers=other_auth).json()["data"] == []
    assert client.get("/v1/webhooks/deliveries", headers=other_auth).json()["data"] == []
    # Still there for its owner.
    assert client.get(f"/v1/webhooks/{endpoint['id']}", headers=auth).status_code == 200


def test_a_cancelled_job_gets_one_delivery_per_url_with_the_cancel(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    register(client, auth)
    register(client, auth, HOOK + "/second")
    job = create_job(client, auth, webhook_url=HOOK)  # the same URL as an endpoint: sent once
    assert job["webhook_url"] == HOOK and "webhook_url" not in job["spec"]
    other = create_job(client, auth, webhook_url="https://elsewhere.example.com/x")
    assert client.get("/v1/webhooks/deliveries", headers=auth).json()["data"] == []  # nothing ended yet

    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()["status"] == "cancelled"
    listing = client.get("/v1/webhooks/deliveries", headers=auth, params={"job_id": job["id"]}).json()
    assert sorted(d["url"] for d in listing["data"]) == [HOOK, HOOK + "/second"]
    for delivery in listing["data"]:
        assert delivery["event"] == "fine_tuning.job.cancelled" and delivery["status"] == "pending"
        assert delivery["attempts"] == 0 and delivery["next_attempt_at"] is not None
        assert delivery["max_attempts"] == 6 and delivery["attempt_log"] == []
    client.post(f"/v1/jobs/{other['id']}/cancel", headers=auth)
    urls = {d["url"] for d in client.get("/v1/webhooks/deliveries", headers=auth).json()["data"]}
    assert "https://elsewhere.example.com/x" in urls

    with app.state.sessionmaker() as session:
        stored = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job["id"])).first()
        assert stored is not None
        payload = json.loads(stored.body)
    assert payload["id"] == stored.id and payload["type"] == "fine_tuning.job.cancelled"
    assert payload["object"] == "event"
    data = payload["data"]
    assert data["id"] == job["id"] and data["status"] == "cancelled" and data["object"] == "fine_tuning.job"
    assert data["metadata"] == {"run": "test"} and data["finished_at"] is not None
    assert "whsec_" not in stored.body


def test_a_second_cancel_writes_no_second_delivery(client: TestClient, auth: dict[str, str]) -> None:
    register(client, auth)
    job = create_job(client, auth)
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).status_code == 409
    assert len(client.get("/v1/webhooks/deliveries", headers=auth).json()["data"]) == 1


def test_a_jobs_webhook_url_needs_a_secret_and_a_good_url(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    with pytest.raises(AssertionError, match="webhook_secret_missing"):
        create_job(client, auth, webhook_url=HOOK)
    assert client.post("/v1/webhooks/secret", headers=auth).status_code == 201
    with pytest.raises(AssertionError, match="invalid_webhook_url"):
        create_job(client, auth, webhook_url="http://169.254.169.254/")
    with pytest.raises(AssertionError, match='"param":"webhook_url"'):
        create_job(client, auth, webhook_url="gopher://example.com/")
    job = create_job(client, auth, webhook_url=HOOK)
    with app.state.sessionmaker() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.webhook_url == HOOK and "webhook_url" not in row.spec
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["webhook_url"] == HOOK


def test_deleting_an_endpoint_gives_up_its_pending_deliveries(
    client: TestClient, auth: dict[str, str]
) -> None:
    endpoint = register(client, auth).json()
    job = create_job(client, auth)
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    deleted = client.delete(f"/v1/webhooks/{endpoint['id']}", headers=auth)
    assert deleted.status_code == 200 and deleted.json() == {
        "id": endpoint["id"],
        "object": "webhook_endpoint.deleted",
        "deleted": True,
    }
    assert client.get(f"/v1/webhooks/{endpoint['id']}", headers=auth).status_code == 404
    (delivery,) = client.get("/v1/webhooks/deliveries", headers=auth).json()["data"]
    assert delivery["status"] == "failed" and delivery["last_error"] == "the endpoint was deleted"
    assert delivery["endpoint_id"] is None and delivery["next_attempt_at"] is None


def test_deliveries_page_newest_first(app: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    register(client, auth)
    jobs = [create_job(client, auth) for _ in range(3)]
    for job in jobs:  # ended as a worker ends them: the status and the outbox in one transaction
        with app.state.sessionmaker() as session:
            row = session.get(Job, job["id"])
            assert row is not None
            row.status, row.error_code, row.error_message = "failed", "oops", "it broke"
            session.flush()
            record_job_deliveries(session, job["id"])
            session.commit()
    first = client.get("/v1/webhooks/deliveries", headers=auth, params={"limit": 2}).json()
    assert first["has_more"] is True and len(first["data"]) == 2
    rest = client.get(
        "/v1/webhooks/deliveries", headers=auth, params={"limit": 2, "after": first["data"][-1]["id"]}
    ).json()
    assert rest["has_more"] is False
    seen = [d["job_id"] for d in first["data"] + rest["data"]]
    assert seen == [job["id"] for job in reversed(jobs)]
    assert all(d["event"] == "fine_tuning.job.failed" for d in first["data"])
    assert_error(
        client.get("/v1/webhooks/deliveries", headers=auth, params={"after": "msg-nope"}),
        400,
        "after",
        "invalid_cursor",
    )
