"""The web page in headless Chromium against a running deltatune (tests/browser/conftest.py): the
jobs list, a finished job's curves, events and a download that matches its sha256, a running job's
curve growing live until the page cancels it, the form, and Swagger at /docs; nothing is loaded from
outside the server.

`PAGE_SCREENSHOT=docs/page.png` also writes the screenshot there (how docs/page.png is made).
"""

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, Route, expect

from service.web import STATIC_DIR
from tests.browser.conftest import Served, small_training_file, spec_for_tiny_bert

pytestmark = pytest.mark.integration

TIMEOUT_MS = 20_000
STREAM_PATH = "/v1/jobs/{job_id}/events/stream"


@pytest.fixture(scope="module")
def outside() -> list[str]:
    """Every request the page tried to send anywhere but the server (each one refused)."""
    return []


@pytest.fixture(scope="module")
def page(browser: Browser, served: Served, outside: list[str]) -> Iterator[Page]:
    """The page, opened with the owner's key typed in once."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(served.url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_server)
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.goto(f"{served.url}/")  # the root redirects to /ui
    expect(opened).to_have_url(f"{served.url}/ui")
    expect(opened.locator("#notice")).to_contain_text("API key")
    opened.fill("#key-input", served.key)
    opened.click("#key-form button")
    yield opened
    context.close()
    assert problems == [], problems  # no script error on the way
    assert outside == [], outside


def job_row(page: Page, job_id: str) -> Locator:
    return page.locator(f'#jobs-table tbody tr[data-job-id="{job_id}"]')


def test_the_jobs_list_shows_both_jobs_with_their_status(page: Page, served: Served) -> None:
    expect(page.locator("#jobs-table tbody tr")).to_have_count(2)
    expect(job_row(page, served.finished)).to_have_attribute("data-status", "succeeded")
    expect(job_row(page, served.running)).to_have_attribute("data-status", "running")
    finished = job_row(page, served.finished)
    expect(finished.locator("td").nth(2)).to_have_text("lora")
    expect(finished.locator("td").nth(3)).to_have_text("tiny-bert")
    expect(finished.locator("progress")).to_have_attribute("value", "1")
    assert page.evaluate("localStorage.getItem('deltatune.apiKey')") == served.key
    assert served.key not in page.url


def test_a_finished_job_shows_its_curves_events_and_artifacts(
    page: Page, served: Served, tmp_path: Path
) -> None:
    events = served.deployment.events(served.finished)
    train_steps = {e["data"]["step"] for e in events if e["type"] == "metrics"}
    eval_steps = {e["data"]["step"] for e in events if e["type"] == "eval"}
    assert len(train_steps) >= 4 and len(eval_steps) >= 2, events

    job_row(page, served.finished).locator("a").click()
    expect(page.locator("#job")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#job-id")).to_have_text(served.finished)
    expect(page.locator("#train-chart")).to_have_attribute("data-points", str(len(train_steps)))
    expect(page.locator("#validation-chart")).to_have_attribute("data-points", str(len(eval_steps)))
    assert "val_loss" in (page.get_attribute("#validation-chart", "data-series") or "")
    expect(page.locator("#train-chart canvas")).to_have_count(1)  # drawn by uPlot
    expect(page.locator("#events li")).to_have_count(len(events))
    listed = served.api(f"/v1/jobs/{served.finished}/artifacts")["data"]
    expect(page.locator("#artifacts a.download")).to_have_count(len(listed))

    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    if os.environ.get("PAGE_SCREENSHOT"):
        page.screenshot(path=os.environ["PAGE_SCREENSHOT"], full_page=True)


def test_an_artifact_downloads_with_its_listed_sha256(page: Page, served: Served) -> None:
    listed = served.api(f"/v1/jobs/{served.finished}/artifacts")["data"]
    adapter = next(a for a in listed if a["name"] == "adapter_model.safetensors")
    page.evaluate(f"location.hash = 'job/{served.finished}'")
    expect(page.locator("#artifacts a.download")).to_have_count(len(listed))
    with page.expect_download() as started:
        page.click('#artifacts a.download[data-name="adapter_model.safetensors"]')
    download = started.value
    assert download.suggested_filename == "adapter_model.safetensors"
    content = Path(download.path()).read_bytes()
    assert len(content) == adapter["bytes"]
    assert hashlib.sha256(content).hexdigest() == adapter["sha256"]
    expect(page.locator("#download-status")).to_have_text("adapter_model.safetensors: saved, sha256 checked")


def points(page: Page) -> int:
    return int(page.get_attribute("#train-chart", "data-points") or 0)


def watch_curve_grow(page: Page, served: Served, *, mode: str) -> None:
    page.evaluate(f"location.hash = 'job/{served.running}'")
    expect(page.locator("#job")).to_have_attribute("data-status", "running")
    expect(page.locator("#job-live")).to_have_attribute("data-mode", mode)
    expect(page.locator("#train-chart")).not_to_have_attribute("data-points", "0")
    before = points(page)
    page.wait_for_function(
        "before => Number(document.querySelector('#train-chart').dataset.points) >= before + 3", arg=before
    )


def test_a_running_job_curve_grows_live_until_the_page_cancels_it(page: Page, served: Served) -> None:
    paths = served.api("/openapi.json")["paths"]
    has_stream = STREAM_PATH in paths
    watch_curve_grow(page, served, mode="stream" if has_stream else "poll")
    if has_stream:
        # Where the stream is answered 404 (an older server) the page polls instead.
        page.evaluate("location.hash = ''")
        page.route(re.compile(r".*/events/stream$"), lambda route: route.fulfill(status=404, json={}))
        watch_curve_grow(page, served, mode="poll")
        page.unroute(re.compile(r".*/events/stream$"))

    page.click("#job-cancel")
    expect(page.locator("#job")).to_have_attribute("data-status", "cancelled", timeout=30_000)
    expect(page.locator("#job-live")).to_have_attribute("data-mode", "finished")
    expect(job_row(page, served.running)).to_have_attribute("data-status", "cancelled")
    assert served.deployment.job(served.running)["status"] == "cancelled"


def test_a_refused_spec_shows_the_servers_message(page: Page) -> None:
    page.click("#new-job summary")
    expect(page.locator("#spec")).to_have_value(re.compile("TRAINING_FILE_ID"))
    page.click("#job-submit")  # the example's placeholder file ids are not files
    expect(page.locator("#form-error")).to_be_visible()
    expect(page.locator("#form-error")).to_contain_text("TRAINING_FILE_ID")
    page.fill("#spec", "{not json")
    page.click("#job-submit")
    expect(page.locator("#form-error")).to_contain_text("spec: not valid JSON")


def test_a_job_starts_from_an_uploaded_file(page: Page, served: Served) -> None:
    page.fill("#spec", spec_for_tiny_bert((STATIC_DIR / "default-spec.json").read_text()))
    page.set_input_files(
        "#train-upload",
        files=[{"name": "train.jsonl", "mimeType": "application/jsonl", "buffer": small_training_file()}],
    )
    page.click("#job-submit")
    expect(page.locator("#form-status")).to_have_text(re.compile(r"^job \S+ queued$"))
    job_id = (page.text_content("#form-status") or "").split()[1]
    expect(page).to_have_url(re.compile(f"#job/{job_id}$"))  # the page opens the new job
    expect(page.locator("#job-id")).to_have_text(job_id)
    expect(page.locator("#jobs-table tbody tr")).to_have_count(3)
    job = served.deployment.job(job_id)
    assert job["base_model"] == "tiny-bert"
    uploaded = served.api(f"/v1/files/{job['training_file']}")
    assert uploaded["filename"] == "train.jsonl" and uploaded["examples"] == 16


def test_swagger_renders_offline(page: Page, served: Served, outside: list[str]) -> None:
    page.goto(f"{served.url}/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    operations = sum(len(methods) for methods in served.api("/openapi.json")["paths"].values())
    expect(page.locator(".opblock")).to_have_count(operations)
    assert outside == [], outside


def test_a_refused_key_is_said_so_and_shows_nothing(browser: Browser, served: Served) -> None:
    context = browser.new_context()
    try:
        other = context.new_page()
        other.goto(f"{served.url}/ui")
        other.fill("#key-input", "dt-not-a-key")
        other.click("#key-form button")
        expect(other.locator("#notice")).to_contain_text(
            "API key refused: invalid API key", timeout=TIMEOUT_MS
        )
        expect(other.locator("#jobs-table tbody tr")).to_have_count(0)
    finally:
        context.close()
