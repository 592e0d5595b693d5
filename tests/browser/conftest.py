"""Debian's Chromium driven by Playwright, and a running deltatune with a finished and a running job.

Playwright never downloads a browser here (`playwright install` is not run): it drives the
distribution's /usr/bin/chromium, which .ci/run installs when it is missing. Without it these tests
skip, saying so.
"""

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.faults.harness import Deployment, deploy, sentiment_lines

logger = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and quiet: no first-run pages, no calls home, no component downloads, no QUIC probing.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The finished job: 4 steps an epoch, enough of them for its curve to go down.
FINISHED_EPOCHS = 6
# The running job: long enough to stay running through the tests (cancelled at the end of them).
RUNNING_EPOCHS = 60
# Few resume points: their writes would only slow the worker here.
DEPLOY_ENV = {"DELTATUNE_RESUME_EVERY_STEPS": "1000"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's package (`apt-get install chromium`)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Served:
    deployment: Deployment
    key: str
    finished: str  # a job that succeeded, with an artifact
    running: str  # a job that is training

    @property
    def url(self) -> str:
        return str(self.deployment.client.base_url).rstrip("/")

    def api(self, path: str) -> Any:
        response = self.deployment.client.get(path)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def served(
    postgres_server: str, tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """`deltatune api` and a `deltatune worker` (real processes over PostgreSQL and Redis) holding one
    finished LoRA job on the tiny BERT and one running; the running one is cancelled at the end."""
    root = tmp_path_factory.mktemp("browser")
    started = time.monotonic()
    with deploy(
        root, admin_url=postgres_server, models_root=tiny_bert_dir.parent, env=DEPLOY_ENV
    ) as deployment:
        logger.info("api and worker up after %.1fs", time.monotonic() - started)
        quick = deployment.quick_job()
        quick["hyperparameters"]["epochs"] = FINISHED_EPOCHS
        finished = deployment.submit(quick)
        deployment.wait_for(finished, "succeeded", timeout=90)
        logger.info("finished job done after %.1fs", time.monotonic() - started)
        running = deployment.submit(deployment.slow_job(epochs=RUNNING_EPOCHS))
        deployment.wait_for(running, lambda job: job["status"] == "running", timeout=60)
        deployment.wait_for(running, lambda job: deployment.last_step(running) >= 2, timeout=60)
        logger.info("running job at step 2 after %.1fs", time.monotonic() - started)
        key = deployment.client.headers["Authorization"].removeprefix("Bearer ")
        try:
            yield Served(deployment, key, finished, running)
        finally:
            deployment.client.post(f"/v1/jobs/{running}/cancel")


def jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def small_training_file() -> bytes:
    return jsonl(sentiment_lines(16, seed=9))


def spec_for_tiny_bert(spec_text: str) -> str:
    """The page's default spec with the tiny BERT and a short schedule."""
    spec = json.loads(spec_text)
    spec["base_model"] = "tiny-bert"
    spec.pop("validation_file")
    spec["hyperparameters"] |= {"epochs": 1, "batch_size": 8, "max_seq_length": 32, "logging_steps": 1}
    spec["method"]["target_modules"] = ["query", "value"]
    return json.dumps(spec, indent=2)
