"""File validation runs at most `validation_concurrency` at once per process; a request that cannot
get a slot in time answers 503 with Retry-After and creates nothing."""

import threading
import time

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from service.validation_slots import validation_slot
from tests.service.helpers import job_body, uploaded_file_id


def test_a_job_waiting_too_long_for_a_slot_answers_503_and_creates_nothing(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    settings.validation_concurrency = 1
    settings.validation_wait_seconds = 0.2
    body = job_body(uploaded_file_id(client, auth))
    with validation_slot(limit=1, wait_seconds=1):  # another request validating
        answer = client.post("/v1/jobs", headers=auth, json=body)

    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    assert answer.json()["error"]["code"] == "busy"
    assert client.get("/v1/jobs", headers=auth).json()["data"] == []
    # The slot is free again: the same request goes through.
    assert client.post("/v1/jobs", headers=auth, json=body).status_code == 201


def test_a_request_waits_for_a_slot_rather_than_failing() -> None:
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with validation_slot(limit=1, wait_seconds=1):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    threading.Timer(0.1, release.set).start()
    started = time.monotonic()
    with validation_slot(limit=1, wait_seconds=5):
        waited = time.monotonic() - started
    thread.join()
    assert waited >= 0.05  # it waited for the holder, then ran


@pytest.mark.parametrize("limit", [1, 3])
def test_no_more_than_the_limit_hold_a_slot_at_once(limit: int) -> None:
    inside = 0
    most = 0
    lock = threading.Lock()

    def validate() -> None:
        nonlocal inside, most
        with validation_slot(limit=limit, wait_seconds=10):
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=validate) for _ in range(4 * limit)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= most <= limit  # (without the limit, 4x as many would overlap)
