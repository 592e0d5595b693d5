"""`run_in_processes`: `tuning.run` for a job that trains in several processes, under torchrun.

This process starts `torchrun --standalone` (torch.distributed.run, the elastic launcher) on
tuning.distributed and serves rank 0's connection with the caller's own sinks: events, checkpoints,
resume points, and the answers to "stop?" and "resume point due?" at each step. So the caller sees
the same calls, in the same order, as from `tuning.run`. When a process dies, torchrun stops the
others and exits; this starts a fresh torchrun (at most `max_restarts` times), whose processes resume
from the latest resume point the caller kept (`latest_resume_point`). When the restarts are spent,
or the caller's stop is not heeded in time, the processes are killed and this raises: never a wait
without an end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuning.errors import Cancelled, ResumeMismatch, TuningError
from tuning.events import EventSink, StopCheck, ignore_event, never_stop
from tuning.resume import ResumeOptions, ResumePoint
from tuning.run import RunResult
from tuning.spec import JobSpec

if TYPE_CHECKING:
    from tuning.checkpoints import CheckpointSink

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 60.0  # a stop not heeded by then (the processes still loading) kills them
EXIT_GRACE_SECONDS = 30.0  # for the processes to leave their group once the job has ended


class TrainingProcessesFailed(TuningError):
    """The job's processes kept failing: torchrun's restarts are spent."""

    code = "training_processes_failed"


@dataclass
class Served:
    """What the launcher learnt from rank 0: how the job ended, and its latest resume point."""

    result: RunResult | None = None
    error: BaseException | None = None
    latest_point: ResumePoint | None = None
    connections: int = 0  # from rank 0, one per start of the processes

    @property
    def ended(self) -> bool:
        return self.result is not None or self.error is not None


def run_in_processes(
    spec: JobSpec,
    out_dir: Path,
    *,
    training_path: Path,
    validation_path: Path | None = None,
    fisher_path: Path | None = None,
    model_dirs: Sequence[Path] = (),
    start_from: Path | None = None,
    on_checkpoint: CheckpointSink | None = None,
    on_event: EventSink = ignore_event,
    should_stop: StopCheck = never_stop,
    resume: ResumeOptions | None = None,
    resume_from: Path | None = None,
    latest_resume_point: Callable[[], ResumePoint | None] | None = None,
    max_restarts: int = 2,
) -> RunResult:
    """`tuning.run(...)` (same arguments, same calls of the sinks) on `spec.resources.processes`
    processes. After a restart they resume from `latest_resume_point()`, by default the latest point
    handed to `resume.on_resume_point` (a sink that moves points away must say where they went).
    """
    work = out_dir.with_name(out_dir.name + "-processes")
    work.mkdir(parents=True, exist_ok=True)
    authkey = secrets.token_bytes(32)
    with Listener(("127.0.0.1", 0), authkey=authkey) as listener:
        request = {
            "spec": spec.model_dump(mode="json"),
            "out_dir": str(out_dir),
            "training_path": str(training_path),
            "validation_path": _text(validation_path),
            "fisher_path": _text(fisher_path),
            "model_dirs": [str(folder) for folder in model_dirs],
            "start_from": _text(start_from),
            "resume_from": _text(resume_from),
            "resume": None
            if resume is None
            else {"every_steps": resume.every_steps, "every_seconds": resume.every_seconds},
            "launcher": {"port": listener.address[1], "authkey": authkey.hex()},
        }
        request_path = work / "request.json"
        request_path.touch(mode=0o600)  # it holds the connection's key
        request_path.write_text(json.dumps(request))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={spec.resources.processes}",
            # Restarts are a fresh torchrun each: within one, a restarted group met the store keys of
            # the one before (gloo connected to a dead process's port, or waited out its timeout).
            "--max-restarts=0",
            "-m",
            "tuning.distributed",
            str(request_path),
        ]
        connections: queue.Queue[Connection] = queue.Queue()
        threading.Thread(target=_accept, args=(listener, connections), daemon=True).start()
        sinks = Sinks(on_checkpoint, on_event, should_stop, resume, resume_from, latest_resume_point)
        served = Served()
        for start in range(max_restarts + 1):
            if start > 0:
                logger.warning(
                    "a process of the job died; starting them again (%d of %d)", start, max_restarts
                )
            # A session of its own: the processes can be stopped together, torchrun and its children.
            processes = subprocess.Popen(command, start_new_session=True)
            try:
                _serve(connections, processes, sinks, served)
            finally:
                _stop(processes, wait=served.result is not None)
            if served.ended:
                break
        else:
            served.error = TrainingProcessesFailed(
                f"a process of the job died {max_restarts + 1} times (the last exit code "
                f"{processes.returncode}); no restart is left"
            )
    if served.error is not None:
        raise served.error
    assert served.result is not None
    return served.result


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None


@dataclass
class Sinks:
    on_checkpoint: CheckpointSink | None
    on_event: EventSink
    should_stop: StopCheck
    resume: ResumeOptions | None
    resume_from: Path | None
    latest_resume_point: Callable[[], ResumePoint | None] | None


def _serve(
    connections: queue.Queue[Connection], processes: subprocess.Popen[bytes], sinks: Sinks, served: Served
) -> None:
    """Answer rank 0 of this start of the processes until the job ends or they exit."""
    connection: Connection | None = None
    stop_since: float | None = None
    while not served.ended:
        if connection is None:
            with contextlib.suppress(queue.Empty):
                connection = connections.get(timeout=POLL_SECONDS)
                served.connections += 1
        elif connection.poll(POLL_SECONDS):
            try:
                message = connection.recv()
            except (EOFError, OSError):  # rank 0 died: torchrun stops the others, then exits
                connection = None
                continue
            _answer(message, connection, sinks, served)
            continue
        if processes.poll() is not None and (connection is None or not connection.poll(0)):
            return  # they exited without the job's end: the caller starts them again, or gives up
        if sinks.should_stop():
            stop_since = stop_since or time.monotonic()
            if time.monotonic() - stop_since > STOP_GRACE_SECONDS:
                served.error = Cancelled()


def _accept(listener: Listener, connections: queue.Queue[Connection]) -> None:
    while True:
        try:
            connections.put(listener.accept())
        except OSError:  # the listener closed: the job ended
            return
        except Exception:  # a caller without the key: refused, and the next one awaited
            logger.warning("refused a connection to the job's launcher", exc_info=True)


def _answer(message: tuple[Any, ...], connection: Connection, sinks: Sinks, served: Served) -> None:
    """Serve one of rank 0's messages (tuning.distributed.Launcher) with the caller's own sinks."""
    kind, *body = message
    if kind == "event":
        sinks.on_event(body[0])
        return
    try:
        answer: Any = None
        if kind == "should_stop":
            answer = sinks.should_stop()
        elif kind == "resume_due":
            due_now = sinks.resume.due_now if sinks.resume is not None else None
            answer = due_now is not None and due_now()
        elif kind == "resume_from":
            answer = _text(_resume_from(sinks, served))
        elif kind == "checkpoint" and sinks.on_checkpoint is not None:
            sinks.on_checkpoint(body[0], body[1])
        elif kind == "resume_point":
            served.latest_point = body[0]
            if sinks.resume is not None and sinks.resume.on_resume_point is not None:
                sinks.resume.on_resume_point(body[0])
        elif kind == "result":
            served.result = body[0]
        elif kind == "cancelled":
            served.error = Cancelled()
        elif kind == "failed":
            served.error = _job_error(*body)
    except BaseException as error:  # the caller's sink refused (a worker that lost its job)
        served.error = error
        connection.send(("refused",))
        return
    connection.send(answer)


def _resume_from(sinks: Sinks, served: Served) -> Path | None:
    """The first start's point is the caller's; a restart's is the latest kept since."""
    if served.connections == 1:
        return sinks.resume_from
    point = sinks.latest_resume_point() if sinks.latest_resume_point is not None else served.latest_point
    if point is not None:
        logger.info("the job's processes started again; they resume from step %d", point.step)
        return point.folder
    return sinks.resume_from


def _job_error(name: str, code: str, message: str, param: str | None) -> TuningError:
    """The job's own error, raised in rank 0, as the caller would have seen it from `tuning.run`."""
    if name == ResumeMismatch.__name__:
        return ResumeMismatch(message)
    error = TuningError(message, param=param)
    error.code = code
    return error


def _stop(processes: subprocess.Popen[bytes], *, wait: bool) -> None:
    """Once the job has a result, let the processes leave their group; else, or if they linger, stop
    them at once (torchrun and its children): none is left behind."""
    if wait:
        with contextlib.suppress(subprocess.TimeoutExpired):
            processes.wait(timeout=EXIT_GRACE_SECONDS)
            return
    for sent in (signal.SIGTERM, signal.SIGKILL):  # torchrun stops its children on SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.killpg(processes.pid, sent)
        with contextlib.suppress(subprocess.TimeoutExpired):
            processes.wait(timeout=EXIT_GRACE_SECONDS / 3)
            return
    processes.wait()
