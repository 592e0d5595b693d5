"""A pool process that has announced its exit survives the SIGTERM its parent answers with."""

import signal
import subprocess
import sys
import textwrap

import pytest

from tests.worker.processes import ROOT, clean_environment

# What billiard's pool process does once a cancel's SIGTERM has made it unwind: SIGTERM's action is the
# default again, worker_process_shutdown is sent, and SIGTERM is blocked in the main thread only while
# it reports its death. A thread of its own (torch's intra-op threads, here a plain one) does not block
# it, so the parent's answering SIGTERM lands there.
EXITING_POOL_PROCESS = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from celery.signals import worker_process_shutdown
    if sys.argv[1] == "worker":  # what `celery -A worker.app worker` imports before it forks its pool
        from worker.app import celery_app
        celery_app.loader.import_default_modules()
    started = threading.Event()
    threading.Thread(target=lambda: (started.set(), time.sleep(5)), daemon=True).start()
    started.wait()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    os.kill(os.getpid(), signal.SIGTERM)  # the parent's answer to DEATH, while the result queue is locked
    time.sleep(0.5)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    print("reported its death and exits on its own", flush=True)
    """
)


@pytest.mark.parametrize("hook", ["worker", "plain"])
def test_the_answering_sigterm_does_not_kill_an_exiting_pool_process(hook: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXITING_POOL_PROCESS, hook],
        cwd=ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if hook == "worker":
        assert (done.returncode, done.stdout.strip()) == (0, "reported its death and exits on its own")
    else:  # without the hook the thread takes the signal and the default action kills the process
        assert done.returncode == -signal.SIGTERM, done.stderr
