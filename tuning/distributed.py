"""One process of a job trained by several: torchrun's entry, `python -m tuning.distributed REQUEST`.

tuning.launch starts torchrun on this module and writes REQUEST, a JSON file: the job's spec, its
files, where the artifact goes, and the launching process's address. Every process joins the group
and trains (tuning.distribution); rank 0 alone writes the artifact, checkpoints and resume points, and
hands each event, checkpoint and resume point to the launching process over one authenticated
loopback connection, asking it at each step whether to stop and whether a resume point is due. When
the launcher starts the processes again after one died, rank 0 asks where to resume from: the latest point
the launcher kept, so the job goes on from there, on this or another number of processes.

A job's own failure (bad data, a cancel) is reported to the launcher, which stops the processes; any
other error ends the process with it, torchrun stops the others, and the launcher starts them again.
"""

import faulthandler
import json
import logging
import signal
import sys
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

from torch import distributed

from tuning.checkpoints import Checkpoint
from tuning.distribution import COLLECTIVE_TIMEOUT, Ranks, join, leave
from tuning.errors import Cancelled, TuningError
from tuning.events import Event, ignore_event
from tuning.fit import fit
from tuning.resume import ResumeOptions, ResumePoint
from tuning.run import run
from tuning.spec import JobSpec

logger = logging.getLogger(__name__)


class Launcher:
    """Rank 0's line to the launching process (tuning.launch serves the other end)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def ask(self, *message: Any) -> Any:
        """Send `message` and wait, boundedly, for the answer: the launcher serves it between steps."""
        self.connection.send(message)
        if not self.connection.poll(COLLECTIVE_TIMEOUT.total_seconds()):
            raise TimeoutError(f"the launching process did not answer {message[0]}")
        answer = self.connection.recv()
        if answer == ("refused",):  # its sink raised: it stops the job itself
            raise RuntimeError(f"the launching process refused {message[0]}")
        return answer

    def event(self, event: Event) -> None:
        self.connection.send(("event", event))

    def checkpoint(self, checkpoint: Checkpoint, dropped: Any) -> None:
        self.ask("checkpoint", checkpoint, list(dropped))  # published before the writer drops folders

    def resume_point(self, point: ResumePoint) -> None:
        self.ask("resume_point", point)  # kept (maybe moved away) before the job goes on

    def should_stop(self) -> bool:
        return bool(self.ask("should_stop"))

    def resume_due(self) -> bool:
        return bool(self.ask("resume_due"))


def train_rank(request: dict[str, Any], ranks: Ranks, launcher: Launcher | None) -> None:
    """This process's part of the job in `request` (tuning.launch writes it)."""
    spec = JobSpec.model_validate(request["spec"])
    resume_from = _agreed_resume_from(request, ranks, launcher)
    inputs: dict[str, Any] = {
        "training_path": Path(request["training_path"]),
        "validation_path": _path(request["validation_path"]),
        "fisher_path": _path(request["fisher_path"]),
        "model_dirs": [Path(folder) for folder in request["model_dirs"]],
        "start_from": _path(request["start_from"]),
        "resume_from": resume_from,
        "ranks": ranks,
    }
    out_dir = Path(request["out_dir"])
    if not ranks.leads:
        # No sinks: rank 0 reports for all. Resume points are read by all but written by rank 0 only.
        fit(spec, **inputs)
        return
    options = request["resume"]
    resume = None
    if options is not None:
        resume = ResumeOptions(
            every_steps=options["every_steps"],
            every_seconds=options["every_seconds"],
            due_now=launcher.resume_due if launcher is not None else None,
            on_resume_point=launcher.resume_point if launcher is not None else None,
        )
    on_event = launcher.event if launcher is not None else ignore_event
    on_event(_processes_event(spec, ranks))
    result = run(
        spec,
        out_dir,
        **inputs,
        on_checkpoint=launcher.checkpoint if launcher is not None else None,
        on_event=on_event,
        should_stop=launcher.should_stop if launcher is not None else (lambda: False),
        resume=resume,
    )
    if launcher is not None:
        launcher.ask("result", result)


def _processes_event(spec: JobSpec, ranks: Ranks) -> Event:
    """What the job's reader learns first: how many processes train it, and how (tuning.fit decides)."""
    parallelism = "FSDP" if spec.method.type == "full" else "DDP"
    backend = distributed.get_backend()
    share = spec.hyperparameters.batch_size / ranks.world_size
    return Event(
        "message",
        f"training on {ranks.world_size} processes under torchrun: {parallelism} over {backend}, "
        f"each about {share:g} examples of every batch of {spec.hyperparameters.batch_size}",
        {"processes": ranks.world_size, "parallelism": parallelism.lower(), "backend": backend},
    )


def _agreed_resume_from(request: dict[str, Any], ranks: Ranks, launcher: Launcher | None) -> Path | None:
    """Where every process resumes from: the launcher's latest kept point (after a restart), else none."""
    chosen = [request["resume_from"]]
    if ranks.leads and launcher is not None:
        chosen = [launcher.ask("resume_from")]
    if ranks.world_size > 1:
        distributed.broadcast_object_list(chosen, src=0)
    return _path(chosen[0])


def _path(value: str | None) -> Path | None:
    return Path(value) if value is not None else None


def main(request_path: Path) -> int:
    request = json.loads(request_path.read_text())
    ranks = join()
    launched, launcher = request["launcher"] is not None, None
    try:
        if ranks.leads and launched:
            address = ("127.0.0.1", int(request["launcher"]["port"]))
            launcher = Launcher(Client(address, authkey=bytes.fromhex(request["launcher"]["authkey"])))
        try:
            train_rank(request, ranks, launcher)
        except Cancelled:
            if not launched:
                raise
            if launcher is not None:
                launcher.ask("cancelled")
        except TuningError as error:  # the job's own: the same on every try, so no restart
            if not launched:
                raise
            if launcher is not None:
                launcher.ask("failed", type(error).__name__, error.code, error.message, error.param)
        return 0
    finally:
        if launcher is not None:
            launcher.connection.close()
        leave()


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` shows where a process waits
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank %(process)d %(name)s: %(message)s")
    sys.exit(main(Path(sys.argv[1])))
