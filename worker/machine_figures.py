"""This machine's figures (tuning.estimate.Worker), measured once per machine and published by every
worker that starts on it, so the dry run estimates for the workers that will run the job.

Measuring takes about 12 s of every core (tuning.machine), so a worker does it when it starts, before
it takes a job (the measurement must not compete with training, nor training skew the measurement),
in a fresh process: that process's resident memory is the baseline a job's process starts from, and
the worker's own process never initialises CUDA, which its forked pool processes could then not use.
The result is kept in `settings.machine_figures_dir`, one file per machine fingerprint (CPU model,
usable CPUs, torch version, GPU models), so a restarted worker publishes again without measuring, and
a machine that changed (another GPU, fewer CPUs for the container, a torch upgrade) measures anew.
Workers starting together on one machine take turns through a file lock: one measures, the others
read its result.
"""

import fcntl
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from importlib import metadata
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from core.models import utcnow
from core.settings import Settings
from core.worker_figures import mark_seen, publish_figures
from tuning.estimate import Worker

logger = logging.getLogger(__name__)

# Far above the ~12 s of an idle 2-core machine: a loaded one measures slower, and a stuck one must
# not keep the worker from starting forever (it then publishes nothing; dry runs use the settings).
MEASURE_TIMEOUT_SECONDS = 600
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class MeasuredFigures:
    worker: Worker
    measured_at: datetime


def machine_fingerprint() -> dict[str, str]:
    """What the figures depend on, read without importing torch or initialising CUDA."""
    return {
        "cpu": _cpu_model(),
        "cpus": str(len(os.sched_getaffinity(0))),  # a container's CPU limit, not the host's count
        "torch": metadata.version("torch"),
        "gpus": ", ".join(_gpu_models()) or "none",
    }


def machine_figures(folder: Path) -> MeasuredFigures:
    """This machine's figures: from `folder` when measured before, else measured now and kept there."""
    fingerprint = machine_fingerprint()
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    with _locked(folder / f"{key}.lock"):
        cached = read_figures(path, fingerprint)
        if cached is not None:
            logger.info("this machine's figures, measured at %s, read from %s", cached.measured_at, path)
            return cached
        logger.info("measuring this machine's figures for the dry run (%s), once per machine", fingerprint)
        measured = MeasuredFigures(measure_in_fresh_process(), utcnow())
        _write_figures(path, fingerprint, measured)
        logger.info("this machine's figures: %s", measured.worker)
        return measured


def read_figures(path: Path, fingerprint: dict[str, str]) -> MeasuredFigures | None:
    """The figures kept in `path` for this fingerprint; None when absent, unreadable or incomplete
    (a figure added to Worker since: measured anew)."""
    try:
        stored = json.loads(path.read_text())
        if stored["fingerprint"] != fingerprint or set(stored["figures"]) != {f.name for f in fields(Worker)}:
            return None
        return MeasuredFigures(Worker(**stored["figures"]), datetime.fromisoformat(stored["measured_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def measure_in_fresh_process() -> Worker:
    command = [sys.executable, "-m", "tuning.machine"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=MEASURE_TIMEOUT_SECONDS, check=True
    )
    return Worker(**json.loads(done.stdout.strip().splitlines()[-1]))


class FiguresPublication:
    """This worker's row in worker_figures: written at its first refresh (replacing what an earlier
    worker of the same hostname left), then marked seen on every sweep, and written again if it is
    missing (the database was down at start, or someone deleted it)."""

    def __init__(self, figures: MeasuredFigures, *, hostname: str, queues: list[str]) -> None:
        self.figures = figures
        self.hostname = hostname
        self.queues = queues
        self._published = False

    def refresh(self, sessions: sessionmaker[Session]) -> None:
        with sessions() as session:
            if self._published and mark_seen(session, hostname=self.hostname):
                return
            publish_figures(
                session,
                hostname=self.hostname,
                queues=self.queues,
                worker=self.figures.worker,
                measured_at=self.figures.measured_at,
            )
            self._published = True
            logger.info("published this machine's figures for queues %s as %s", self.queues, self.hostname)


def publication_at_start(
    settings: Settings, *, hostname: str, queues: list[str]
) -> FiguresPublication | None:
    """What this worker publishes, measured or read from the cache; None when measuring is off or
    failed (dry runs then use the settings' figures, or other workers')."""
    if not settings.measure_worker:
        logger.info("measure_worker is off: this worker publishes no figures")
        return None
    try:
        figures = machine_figures(settings.machine_figures_dir)
    except Exception:
        logger.exception("could not measure this machine's figures; this worker publishes none")
        return None
    return FiguresPublication(figures, hostname=hostname, queues=queues)


def _write_figures(path: Path, fingerprint: dict[str, str], measured: MeasuredFigures) -> None:
    stored = {
        "fingerprint": fingerprint,
        "measured_at": measured.measured_at.isoformat(),
        "figures": asdict(measured.worker),
    }
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(stored, indent=2) + "\n")
    partial.replace(path)  # a reader sees the whole file or none


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_models() -> list[str]:
    """The NVIDIA driver's list of the machine's GPUs (all of them, whichever a worker may use)."""
    if not NVIDIA_GPUS.is_dir():
        return []
    models = []
    for information in sorted(NVIDIA_GPUS.glob("*/information")):
        try:
            text = information.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Model:"):
                models.append(line.split(":", 1)[1].strip())
    return models
