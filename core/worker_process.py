"""A Celery worker as a child process: how `deltatune serve`, `deltatune worker` and the tests start one.

The child gets its own session (process group), so a Ctrl-C in the terminal reaches only the parent,
which then stops the worker in order: a warm shutdown first (finish or hand back the running task),
a cold one after a grace period, and a kill of the whole group as a last resort.
"""

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import IO

from core.dispatch import QUEUES

logger = logging.getLogger(__name__)

DEFAULT_QUEUES = ",".join(QUEUES)


def worker_command(
    *, queues: str = DEFAULT_QUEUES, concurrency: int = 1, hostname: str | None = None, loglevel: str = "INFO"
) -> list[str]:
    """`python -m celery -A worker.app worker ...` with this interpreter, so it finds the same packages."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
    ]
    if hostname:
        command += ["--hostname", hostname]
    return command


def start_worker(
    env: Mapping[str, str],
    *,
    queues: str = DEFAULT_QUEUES,
    concurrency: int = 1,
    hostname: str | None = None,
    output: IO[bytes] | IO[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the worker with exactly `env`; its log goes to `output` (default: this process's)."""
    command = worker_command(queues=queues, concurrency=concurrency, hostname=hostname)
    logger.info("starting the Celery worker: %s", " ".join(command[1:]))
    return subprocess.Popen(
        command,
        env=dict(env),
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
        start_new_session=True,
    )


def stop_worker(process: subprocess.Popen[bytes], *, grace_seconds: float = 10.0) -> int:
    """Stop the worker and its pool; returns its exit code."""
    steps = (
        (signal.SIGTERM, grace_seconds, "warm shutdown"),
        (signal.SIGQUIT, 5.0, "cold shutdown: the running job is queued again once its lease expires"),
    )
    for signum, wait_seconds, what in steps:
        if process.poll() is not None:
            return process.returncode
        logger.info("stopping the Celery worker (%s)", what)
        process.send_signal(signum)
        try:
            return process.wait(timeout=wait_seconds)
        except subprocess.TimeoutExpired:
            continue
    logger.warning("the Celery worker did not stop; killing its process group")
    # The group is the worker's own session (start_new_session), so this reaches only its pool.
    with contextlib.suppress(ProcessLookupError):  # it may have exited since the last wait
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait()
