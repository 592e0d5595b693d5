"""`deltatune serve` as a child process: start it, wait until it answers, find its worker, stop it."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.worker.processes import wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid`, read from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # it ended while we looked
            # The command name in parentheses may hold spaces; the parent id follows the last ')'.
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


class ServeProcess:
    """`python -m service.cli serve --port N` in `cwd`, with its output in a log file."""

    def __init__(self, env: Mapping[str, str], cwd: Path, log_path: Path) -> None:
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.children: set[int] = set()  # its worker lives in its own session: remember it to reap it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServeProcess":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def wait_until_serving(self, timeout: float = 120.0) -> None:
        wait_for(self._answers, timeout=timeout, what=f"deltatune serve on {self.url}", log=self.log)
        self.note_children()

    def wait_until_worker_ready(self, timeout: float = 90.0) -> None:
        wait_for(
            lambda: re.search(r"@\S+ ready\.", self.log()), timeout=timeout, what="the worker", log=self.log
        )

    def printed_keys(self) -> list[str]:
        return re.findall(r"^API key: (\S+)$", self.log(), flags=re.MULTILINE)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as a service manager sends it; returns the exit code."""
        assert self.process is not None
        self.note_children()
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill_leftovers()

    def note_children(self) -> set[int]:
        if self.process is not None and self.process.poll() is None:
            self.children |= children_of(self.process.pid)
        return self.children

    def kill_leftovers(self) -> None:
        """Whatever the test saw, leave none of the processes it started behind."""
        self.note_children()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid in self.children:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            code = self.process.returncode
            raise AssertionError(f"deltatune serve exited with {code}\n{self.log()[-6000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            time.sleep(0.3)
            return False
