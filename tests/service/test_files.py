"""/v1/files: streamed, size-limited uploads validated line by line; owner-scoped reads and deletes."""

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.models import File
from core.settings import Settings
from tests.service.helpers import GOOD_LINES, create_job, files_on_disk, jsonl, set_job, upload


def test_upload_stores_a_validated_file(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    content = jsonl(GOOD_LINES)
    response = upload(client, auth, content, filename="reviews.jsonl")
    assert response.status_code == 201, response.text
    file = response.json()
    assert file["object"] == "file" and file["id"].startswith("file-")
    assert file["status"] == "processed" and file["status_details"] is None
    assert file["filename"] == "reviews.jsonl" and file["purpose"] == "fine-tune"
    assert file["bytes"] == len(content) and file["examples"] == len(GOOD_LINES)
    assert file["sha256"] == hashlib.sha256(content).hexdigest()
    assert (settings.files_dir / file["id"]).read_bytes() == content
    assert files_on_disk(settings.data_dir / "uploads") == []

    assert client.get(f"/v1/files/{file['id']}", headers=auth).json() == file
    listed = client.get("/v1/files", headers=auth).json()
    assert listed["object"] == "list" and [f["id"] for f in listed["data"]] == [file["id"]]
    assert listed["has_more"] is False


def test_content_streams_the_stored_bytes(client: TestClient, auth: dict[str, str]) -> None:
    content = jsonl(GOOD_LINES * 3)
    file = upload(client, auth, content).json()
    response = client.get(f"/v1/files/{file['id']}/content", headers=auth)
    assert response.status_code == 200
    assert response.content == content
    assert response.headers["x-content-sha256"] == hashlib.sha256(content).hexdigest()
    assert "train.jsonl" in response.headers["content-disposition"]


def test_bad_line_37_is_named_and_the_file_is_kept_as_error(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    lines = [dict(GOOD_LINES[i % len(GOOD_LINES)]) for i in range(40)]
    del lines[36]["label"]  # line 37, 1-based
    response = upload(client, auth, jsonl(lines))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["message"].startswith("line 37:") and "label" in error["message"]
    assert error["param"] == "file" and error["code"] == "invalid_file"

    (refused,) = client.get("/v1/files", headers=auth).json()["data"]
    assert refused["status"] == "error" and refused["status_details"] == error["message"]
    assert refused["examples"] is None
    assert files_on_disk(settings.files_dir) == [] and files_on_disk(settings.data_dir / "uploads") == []
    content = client.get(f"/v1/files/{refused['id']}/content", headers=auth)
    assert content.status_code == 409 and content.json()["error"]["code"] == "file_not_ready"


def test_invalid_utf8_names_its_line(client: TestClient, auth: dict[str, str]) -> None:
    content = jsonl(GOOD_LINES[:2]) + b'{"text": "caf\xe9", "label": "positive"}\n'
    error = upload(client, auth, content).json()["error"]
    assert error["message"].startswith("line 3:") and "UTF-8" in error["message"]


def test_empty_file_is_refused(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    response = upload(client, auth, b"")
    assert response.status_code == 422
    assert "empty" in response.json()["error"]["message"]
    assert files_on_disk(settings.files_dir) == []


def test_file_over_the_limit_is_413_and_leaves_nothing(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    too_big = jsonl([{"text": "x" * 1000, "label": "a"}] * (settings.max_upload_bytes // 1000 + 200))
    response = upload(client, auth, too_big)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "file_too_large"
    assert files_on_disk(settings.data_dir / "uploads") == [] and files_on_disk(settings.files_dir) == []
    with app.state.sessionmaker() as session:
        assert session.scalars(select(File)).all() == []


def test_limit_is_enforced_while_streaming_without_content_length(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    boundary = "deltatuneboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    ).encode()
    line = jsonl([{"text": "y" * 1000, "label": "a"}])
    sent = []

    def chunked_body() -> Iterator[bytes]:
        # No Content-Length: only counting while streaming can stop this one.
        yield head
        for _ in range(settings.max_upload_bytes // len(line) * 4):
            sent.append(line)
            yield line
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = client.post("/v1/files", headers=headers, content=chunked_body())
    assert response.status_code == 413, response.text
    assert files_on_disk(settings.data_dir / "uploads") == [] and files_on_disk(settings.files_dir) == []


def test_exactly_the_limit_is_accepted(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    line = jsonl([{"text": "z" * 90, "label": "b"}])
    body = line * (settings.max_upload_bytes // len(line) - 1)
    framing = len(jsonl([{"text": "", "label": "b"}]))
    body += jsonl([{"text": "w" * (settings.max_upload_bytes - len(body) - framing), "label": "b"}])
    assert len(body) == settings.max_upload_bytes
    response = upload(client, auth, body)
    assert response.status_code == 201, response.text
    assert response.json()["bytes"] == settings.max_upload_bytes
    # One byte more (a harmless trailing newline) crosses the limit.
    assert upload(client, auth, body + b"\n").status_code == 413


def test_bad_form_fields_name_the_field(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    wrong_purpose = upload(client, auth, purpose="assistants").json()["error"]
    assert wrong_purpose["param"] == "purpose" and "assistants" in wrong_purpose["message"]

    no_file = client.post(
        "/v1/files", headers=auth, data={"purpose": "fine-tune"}, files={"other": ("x", b"1")}
    )
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "other"

    missing = client.post(
        "/v1/files", headers={**auth, "Content-Type": "multipart/form-data; boundary=b"}, content=b"--b--\r\n"
    )
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"

    not_multipart = client.post("/v1/files", headers=auth, json={"file": "x", "purpose": "fine-tune"})
    assert not_multipart.status_code == 415
    assert files_on_disk(settings.data_dir / "uploads") == [] and files_on_disk(settings.files_dir) == []


def test_unknown_and_other_owners_files_are_404(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    mine = upload(client, auth).json()["id"]
    for method, suffix in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        unknown = client.request(method, f"/v1/files/file-unknown{suffix}", headers=auth)
        theirs = client.request(method, f"/v1/files/{mine}{suffix}", headers=other_auth)
        assert unknown.status_code == theirs.status_code == 404
        assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "file_not_found"
    assert client.get("/v1/files", headers=other_auth).json()["data"] == []
    assert client.get(f"/v1/files/{mine}", headers=auth).status_code == 200


def test_files_paginate_newest_first(client: TestClient, auth: dict[str, str]) -> None:
    ids = [upload(client, auth).json()["id"] for _ in range(3)]
    first = client.get("/v1/files?limit=2", headers=auth).json()
    assert [f["id"] for f in first["data"]] == ids[::-1][:2] and first["has_more"] is True
    second = client.get(f"/v1/files?limit=2&after={ids[1]}", headers=auth).json()
    assert [f["id"] for f in second["data"]] == [ids[0]] and second["has_more"] is False
    bad_cursor = client.get("/v1/files?after=file-nope", headers=auth)
    assert bad_cursor.status_code == 400 and bad_cursor.json()["error"]["param"] == "after"


def test_delete_unused_file_removes_row_and_blob(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    file_id = upload(client, auth).json()["id"]
    response = client.delete(f"/v1/files/{file_id}", headers=auth)
    assert response.json() == {"id": file_id, "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{file_id}", headers=auth).status_code == 404
    assert files_on_disk(settings.files_dir) == []
    with app.state.sessionmaker() as session:
        assert session.get(File, file_id) is None


def test_delete_of_a_file_a_queued_job_uses_is_409(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    job = create_job(client, auth)
    response = client.delete(f"/v1/files/{job['training_file']}", headers=auth)
    assert response.status_code == 409 and job["id"] in response.json()["error"]["message"]
    assert (settings.files_dir / job["training_file"]).is_file()

    set_job(app, job["id"], status="running")
    assert client.delete(f"/v1/files/{job['training_file']}", headers=auth).status_code == 409


def test_delete_of_a_file_an_old_job_used_keeps_the_row_as_deleted(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    job = create_job(client, auth)
    set_job(app, job["id"], status="failed")
    file_id = job["training_file"]
    assert client.delete(f"/v1/files/{file_id}", headers=auth).status_code == 200
    assert not (settings.files_dir / file_id).exists()
    assert client.get(f"/v1/files/{file_id}", headers=auth).status_code == 404
    assert file_id not in [f["id"] for f in client.get("/v1/files", headers=auth).json()["data"]]
    with app.state.sessionmaker() as session:
        row = session.get(File, file_id)
        assert row is not None and row.status == "deleted"
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["training_file"] == file_id


def multipart_of(lines: list[dict[str, Any]], boundary: str = "cutboundary") -> tuple[bytes, dict[str, str]]:
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
    ).encode()
    body += jsonl(lines) + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_a_body_cut_off_before_its_closing_boundary_is_400_and_stores_nothing(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    lines = [{"text": f"example {index}", "label": "a" if index % 2 else "b"} for index in range(100)]
    body, content_type = multipart_of(lines)
    after_line_50 = body.index(b"example 50")
    for cut in (after_line_50, len(body) - len(b"--\r\n"), len(body) - len(b"\r\n--cutboundary--\r\n")):
        response = client.post("/v1/files", headers={**auth, **content_type}, content=body[:cut])
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "incomplete_upload"
    assert files_on_disk(settings.data_dir / "uploads") == [] and files_on_disk(settings.files_dir) == []
    with app.state.sessionmaker() as session:
        assert session.scalars(select(File)).all() == []
    # The whole body, closing boundary and all (its final CRLF is optional), is stored.
    for whole in (body, body.removesuffix(b"\r\n")):
        stored = client.post("/v1/files", headers={**auth, **content_type}, content=whole)
        assert stored.status_code == 201, stored.text
        assert stored.json()["examples"] == 100


def test_a_client_that_disconnects_mid_upload_stores_nothing_and_logs_no_traceback(
    app: FastAPI,
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body, content_type = multipart_of([{"text": "half", "label": "a"}] * 200)
    headers = [(name.lower().encode(), value.encode()) for name, value in {**auth, **content_type}.items()]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[:2000], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/files", "raw_path": b"/v1/files", "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
        "app": app,
    }  # fmt: skip
    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]
    assert any("disconnected" in record.getMessage() for record in caplog.records), caplog.text
    assert files_on_disk(settings.data_dir / "uploads") == [] and files_on_disk(settings.files_dir) == []
    with app.state.sessionmaker() as session:
        assert session.scalars(select(File)).all() == []
