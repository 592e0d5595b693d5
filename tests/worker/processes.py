"""Real worker processes for tests: start, wait for, read the log of, and stop a Celery worker."""

import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from core.worker_process import start_worker, stop_worker

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def clean_environment(**variables: str) -> dict[str, str]:
    """This process's environment without any deltatune setting, plus `variables`.

    Workers measure no figures unless `variables` asks them to: measuring takes every core for about
    12 s per start (tests/worker/test_machine_figures.py is the test that does)."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("DELTATUNE_") and name != "DATABASE_URL"
    }
    # The repository root on the path: the children import `worker.app` and `service` from the source tree.
    inherited["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), inherited.get("PYTHONPATH")]))
    return inherited | {"DELTATUNE_MEASURE_WORKER": "false"} | variables


class WorkerProcess:
    """A `python -m celery -A worker.app worker` child whose log goes to a file the test can show."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *, hostname: str) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.hostname = hostname
        self.process: subprocess.Popen[bytes] | None = None
        self._ready_lines_before = 0

    def start(self) -> "WorkerProcess":
        self._ready_lines_before = self.log().count(self._ready_line)
        with self.log_path.open("ab") as log:
            self.process = start_worker(self.env, hostname=self.hostname, output=log)
        return self

    @property
    def _ready_line(self) -> str:
        return f"{self.hostname} ready."

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until Celery says `<hostname> ready.` (after its start-up re-send of queued jobs)."""
        wait_for(
            lambda: self.log().count(self._ready_line) > self._ready_lines_before,
            timeout=timeout,
            what=f"worker {self.hostname} to be ready",
            log=self.log,
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_worker(self.process, grace_seconds=20)
            self.process = None


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, log: Callable[[], str]) -> T:
    """Poll `check` until it returns something; on timeout fail with the worker's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result is not None and result is not False:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n--- log ---\n{log()[-6000:]}")
