"""Malformed uploads in every format: each answered with the first bad line and its reason, no data
kept, and the good file's detected format returned."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.service.helpers import files_on_disk, jsonl, upload

LABELLED = {"text": "good movie", "label": "pos"}
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def lines(*records: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lines(LABELLED, {"text": "bad film"}), "line 2: missing 'label'"),
        (
            lines(LABELLED, {"text": "bad", "label": ["neg"]}),
            "line 2: 'label' must be a string or an integer, got an array",
        ),
        (
            lines({"text": "a", "labels": ["x"]}, {"text": "b", "labels": "y"}),
            "line 2: 'labels' must be an array",
        ),
        (
            lines({"text": "a", "label": 0.5}, {"text": "b", "label": "high"}),
            "line 2: 'label' must be a number in a regression file",
        ),
        (lines({"text": "a"}, {"text": 7}), "line 2: 'text' must be a string, got an integer"),
        (lines({"prompt": "a", "completion": "b"}, {"prompt": "c"}), "line 2: missing 'completion'"),
        (lines({"prompt": "a", "completion": None}), "line 1: 'completion' must be a string, got null"),
        (
            lines(CHAT, {"messages": [{"role": "user", "content": "hi"}]}),
            "line 2: the chat has no assistant turn",
        ),
        (lines({"messages": [{"role": "user"}]}), "line 1: messages[0] is missing 'content'"),
        (
            lines({"messages": [{"role": "robot", "content": "x"}]}),
            "line 1: messages[0].role 'robot' is not one of",
        ),
        (lines(LABELLED) + b'{"text": "caf\xe9", "label": "pos"}\n', "line 2: not valid UTF-8"),
        (lines(LABELLED, "{not json"), "line 2: not valid JSON"),
        (b"", "no examples: the file is empty"),
    ],
    ids=[
        "classification-missing-key",
        "classification-wrong-type",
        "multi_label-wrong-type",
        "regression-wrong-type",
        "text-wrong-type",
        "prompt_completion-missing-key",
        "prompt_completion-null",
        "chat-no-assistant",
        "chat-missing-content",
        "chat-unknown-role",
        "invalid-utf8",
        "invalid-json",
        "empty-file",
    ],
)
def test_malformed_upload_names_line_and_reason(
    client: TestClient, auth: dict[str, str], settings: Settings, content: bytes, message: str
) -> None:
    response = upload(client, auth, content)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["message"].startswith(message), error["message"]
    assert error["param"] == "file"
    assert files_on_disk(settings.files_dir) == [] and files_on_disk(settings.data_dir / "uploads") == []
    assert [f["status"] for f in client.get("/v1/files", headers=auth).json()["data"]] == ["error"]


def test_a_line_longer_than_the_upload_limit_is_413(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    long_line = lines(LABELLED, {"text": "x" * settings.max_upload_bytes, "label": "neg"})
    response = upload(client, auth, long_line)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "file_too_large"
    assert files_on_disk(settings.files_dir) == [] and files_on_disk(settings.data_dir / "uploads") == []
    assert client.get("/v1/files", headers=auth).json()["data"] == []


@pytest.mark.parametrize(
    ("records", "format"),
    [
        ([LABELLED, {"text": "bad", "label": "neg"}], "classification"),
        ([{"text": "a", "labels": ["x", "y"]}], "multi_label"),
        ([{"text": "a", "label": 0.5}], "regression"),
        ([{"text": "a"}], "text"),
        ([{"prompt": "a", "completion": "b"}], "prompt_completion"),
        ([CHAT], "chat"),
    ],
)
def test_upload_returns_and_keeps_the_detected_format(
    client: TestClient, auth: dict[str, str], records: list[dict[str, Any]], format: str
) -> None:
    response = upload(client, auth, jsonl(records))
    assert response.status_code == 201, response.text
    assert response.json()["format"] == format
    assert client.get(f"/v1/files/{response.json()['id']}", headers=auth).json()["format"] == format


def test_upload_description_lists_the_six_line_shapes(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/files"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    description = schema["properties"]["file"]["description"]
    for shape in (
        '{"text", "label"}',
        '{"text", "labels"',
        '{"text"}',
        '{"prompt", "completion"}',
        '{"messages"',
    ):
        assert shape in description
