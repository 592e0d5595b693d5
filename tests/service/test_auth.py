"""API keys: hashed at rest, owner-scoped, and a 401 in the error shape when missing or bad."""

import hashlib

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.models import ApiKey, Owner
from service.auth import create_api_key, list_api_keys, owner_for_key, revoke_api_key
from service.key_cache import KeyCache
from tests.service.conftest import key_headers
from tests.service.helpers import create_job


def test_create_api_key_stores_only_the_sha256(app: FastAPI) -> None:
    with app.state.sessionmaker() as session:
        key = create_api_key(session, owner_name="alice")
        stored = session.scalars(select(ApiKey)).all()
    assert key.startswith("dt-") and len(key) == 3 + 32
    assert len(stored) == 1
    assert stored[0].key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in {stored[0].key_hash, stored[0].prefix, stored[0].id}
    assert key.startswith(stored[0].prefix)


def test_keys_of_one_owner_share_it_and_keys_differ(app: FastAPI) -> None:
    with app.state.sessionmaker() as session:
        first = create_api_key(session, owner_name="alice")
        second = create_api_key(session, owner_name="alice")
        create_api_key(session, owner_name="bob")
        owners = session.scalars(select(Owner.name).order_by(Owner.name)).all()
        alice_first, alice_second = owner_for_key(session, first), owner_for_key(session, second)
        listed = list_api_keys(session)
    assert first != second
    assert owners == ["alice", "bob"]
    assert alice_first is not None and alice_second is not None and alice_first.id == alice_second.id
    assert [info.owner_name for info in listed] == ["alice", "alice", "bob"]
    assert all(info.revoked_at is None for info in listed)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer dt-not-a-real-key"}, "invalid_api_key"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "missing_api_key"),
    ],
)
def test_missing_or_invalid_key_is_401(client: TestClient, headers: dict[str, str], code: str) -> None:
    for path in ("/v1/files", "/v1/jobs", "/v1/models", "/v1/jobs/ftjob-x/events"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        assert error["code"] == code and error["type"] == "authentication_error"


def revoke_only_key(app: FastAPI) -> None:
    with app.state.sessionmaker() as session:
        (key_id,) = [info.id for info in list_api_keys(session)]
        assert revoke_api_key(session, key_id=key_id)
        assert not revoke_api_key(session, key_id=key_id)  # already revoked


def test_revoked_key_is_refused_at_once_with_the_key_cache_off(app: FastAPI, client: TestClient) -> None:
    app.state.api_keys = KeyCache(ttl_seconds=0)
    headers = key_headers(app, "alice")
    assert client.get("/v1/files", headers=headers).status_code == 200
    revoke_only_key(app)
    response = client.get("/v1/files", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_revoked_key_stops_working_within_the_key_cache_ttl(app: FastAPI, client: TestClient) -> None:
    clock = Clock()
    app.state.api_keys = KeyCache(ttl_seconds=10, clock=clock)
    headers = key_headers(app, "alice")
    assert client.get("/v1/jobs", headers=headers).status_code == 200  # read from the database, cached
    revoke_only_key(app)
    clock.now = 9.9
    assert client.get("/v1/jobs", headers=headers).status_code == 200  # the stated bound, not longer
    clock.now = 10.0
    response = client.get("/v1/jobs", headers=headers)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    clock.now = 10.1
    assert client.get("/v1/jobs", headers=headers).status_code == 401  # and the refusal is not cached


def test_unknown_keys_are_not_cached(app: FastAPI, client: TestClient) -> None:
    for guess in range(50):
        response = client.get("/v1/jobs", headers={"Authorization": f"Bearer dt-guess-{guess}"})
        assert response.status_code == 401
    assert len(app.state.api_keys) == 0
    client.get("/v1/jobs", headers=key_headers(app, "alice"))
    assert len(app.state.api_keys) == 1


def test_cached_keys_keep_each_owner_to_its_own_jobs(
    app: FastAPI, client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    jobs = {"alice": create_job(client, auth)["id"], "mallory": create_job(client, other_auth)["id"]}
    for _ in range(3):  # both keys' owners come from the cache after their first request
        for owner, headers, other in (("alice", auth, "mallory"), ("mallory", other_auth, "alice")):
            listed = client.get("/v1/jobs", headers=headers).json()["data"]
            assert [job["id"] for job in listed] == [jobs[owner]]
            assert client.get(f"/v1/jobs/{jobs[owner]}", headers=headers).status_code == 200
            assert client.get(f"/v1/jobs/{jobs[other]}", headers=headers).status_code == 404
    assert len(app.state.api_keys) == 2


def test_upload_without_key_is_refused_before_the_body_is_stored(client: TestClient, app: FastAPI) -> None:
    response = client.post(
        "/v1/files", files={"file": ("a.jsonl", b"x" * 1000)}, data={"purpose": "fine-tune"}
    )
    assert response.status_code == 401
    uploads = app.state.settings.data_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
