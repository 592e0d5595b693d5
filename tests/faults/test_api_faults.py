"""Issue 10's API rows, fixed before this suite, checked against a real `deltatune api` process (no
worker: nothing here trains). Kept short: tests/service holds the detailed tests of each."""

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.models import File, Job
from tests.faults.harness import Deployment, deploy, sentiment_lines
from tests.integration.services import POSTGRES_ADMIN_URL

pytestmark = pytest.mark.integration

MB = 1024 * 1024


@pytest.fixture(scope="module")
def api(
    postgres_server: str, tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("api-faults")
    with deploy(
        root, admin_url=POSTGRES_ADMIN_URL, models_root=tiny_bert_dir.parent, workers=()
    ) as deployment:
        yield deployment


def rows(api: Deployment, table: type[File] | type[Job]) -> int:
    with api.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def stored_files(api: Deployment) -> list[str]:
    return sorted(
        path.relative_to(api.data_dir).as_posix()
        for folder in ("files", "uploads")
        if (api.data_dir / folder).is_dir()
        for path in (api.data_dir / folder).iterdir()
    )


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM), which psutil does not report."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


@pytest.mark.timeout(60)
def test_one_idempotency_key_posted_twice_makes_one_job_and_one_message(api: Deployment) -> None:
    spec = api.quick_job()
    headers = {"Idempotency-Key": f"faults-{secrets.token_hex(8)}"}
    jobs, messages = rows(api, Job), api.queue_length()

    first = api.client.post("/v1/jobs", json=spec, headers=headers)
    again = api.client.post("/v1/jobs", json=spec, headers=headers)

    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert rows(api, Job) == jobs + 1
    assert api.queue_length() == messages + 1


@pytest.mark.timeout(60)
def test_an_upload_cut_off_before_its_closing_boundary_is_400_and_stores_nothing(api: Deployment) -> None:
    boundary = "faultsboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n" + "\n".join(sentiment_lines(64, seed=5)) + "\n"
    ).encode()  # and no closing --faultsboundary--
    files, stored = rows(api, File), stored_files(api)

    response = api.client.post(
        "/v1/files", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )

    assert response.status_code == 400, response.text
    assert rows(api, File) == files and stored_files(api) == stored


@pytest.mark.timeout(120)
def test_a_dry_run_on_a_file_with_one_10_mb_line_is_quick_and_small(api: Deployment) -> None:
    words = ("great plot and acting " * (10 * MB // 22 + 1))[: 10 * MB]
    lines = [json.dumps({"text": words, "label": "positive"}), *sentiment_lines(4, seed=6)]
    training = api.upload(lines, filename="long-line.jsonl")
    spec = api.quick_job() | {"training_file": training, "validation_file": None, "dry_run": True}
    assert api.api is not None
    peak_before = peak_rss_bytes(api.api.pid)

    started = time.monotonic()
    response = api.client.post("/v1/jobs", json=spec, timeout=60)
    seconds = time.monotonic() - started

    assert response.status_code == 200, response.text
    grown = peak_rss_bytes(api.api.pid) - peak_before
    print(f"\ndry run on a 10 MB line: {seconds:.2f} s, api peak RSS grew {grown / MB:.1f} MB")
    assert seconds < 10  # a regression guard: the README gives the measured figure
    assert grown < 200 * MB


@pytest.mark.timeout(60)
def test_lora_target_modules_that_match_nothing_are_422_naming_the_field(api: Deployment) -> None:
    spec = api.quick_job()
    spec["method"] = spec["method"] | {"target_modules": ["nonexistent"]}
    jobs = rows(api, Job)

    response = api.client.post("/v1/jobs", json=spec)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "method.target_modules"
    assert "nonexistent" in response.json()["error"]["message"]
    assert rows(api, Job) == jobs
