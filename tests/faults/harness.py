"""A running deployment a fault test can break: real `deltatune api` and `deltatune worker` processes
over a fresh PostgreSQL database and a Redis of the test's own.

    with deploy(root, admin_url=..., models_root=..., workers=("w1",)) as deployment:
        job_id = deployment.submit(deployment.slow_job())
        deployment.wait_for(job_id, lambda job: deployment.last_step(job_id) >= 6, timeout=60)
        deployment.kill_worker("w1")             # SIGKILL its whole process group
        deployment.start_worker("w2")            # another hostname, same database, broker, data
        deployment.wait_for(job_id, "succeeded", timeout=90)

Every process runs in its own session (process group), from this checkout (`python -m service.cli`),
configured only by its environment, with its output in a log file under `root`; teardown stops each
by its own pid, whatever the test did. Lease, heartbeat, sweep and resume settings are short, so a
lost worker is noticed in seconds (LEASE_ENV).
"""

import contextlib
import hashlib
import json
import math
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import redis
from psycopg import sql
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine
from core.models import Artifact, JobEvent
from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.auth import create_api_key
from tests.faults.servers import RedisServer, free_port, start_redis
from tests.worker.processes import clean_environment

FINISHED = ("succeeded", "failed", "cancelled")
HOST = "faults"  # the host part of every worker's Celery node name: <name>@faults

# Short enough that a lost worker is noticed and its job taken back within seconds.
LEASE_ENV = {
    "DELTATUNE_LEASE_SECONDS": "3",
    "DELTATUNE_HEARTBEAT_SECONDS": "0.5",
    "DELTATUNE_SWEEP_SECONDS": "1",
    "DELTATUNE_RESEND_AFTER_SECONDS": "2",
    "DELTATUNE_RESUME_EVERY_STEPS": "2",
    "DELTATUNE_DATABASE_OUTAGE_SECONDS": "30",
}

# The slow job: long lines at batch 8 cost tens of milliseconds a step on a 2-core CPU, so the job
# trains for seconds, over many steps (a metrics event each), in two epochs.
SLOW_EXAMPLES = 480
SLOW_WORDS = 100
SLOW_BATCH = 8
SLOW_EPOCHS = 2
SLOW_TOTAL_STEPS = math.ceil(SLOW_EXAMPLES / SLOW_BATCH) * SLOW_EPOCHS

# What may stay in the data folder after every job ended: blobs, published artifacts and checkpoints,
# finished jobs' models. Anything else below another folder (work/, uploads/, a resume store) is
# scratch or staging of an attempt, and a leftover once its job is finished.
KEPT_FOLDERS = frozenset({"files", "artifacts", "checkpoints", "job-models"})
START_TIMEOUT_SECONDS = 120.0
STOP_GRACE_SECONDS = 5.0


def sentiment_lines(count: int, *, seed: int, words: int = 4) -> list[str]:
    """Classification lines a tiny BERT learns: each label has its own cue words among filler."""
    rng = random.Random(seed)
    cues = {"positive": ["great", "love", "excellent"], "negative": ["awful", "hate", "terrible"]}
    filler = ["the", "movie", "was", "plot", "really", "a", "and", "acting"]
    lines = []
    for index in range(count):
        label = ("positive", "negative")[index % 2]
        text = rng.choices(cues[label], k=2) + rng.choices(filler, k=words)
        rng.shuffle(text)
        lines.append(json.dumps({"text": " ".join(text), "label": label}))
    return lines


@dataclass
class Process:
    """One child process in its own session, its output in `log_path`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    seen_children: set[psutil.Process] = field(default_factory=set)

    def start(self) -> "Process":
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def children(self) -> list[psutil.Process]:
        """The process's live children (a Celery worker's pool processes), remembered: should the
        process itself die first, teardown still ends them (see kill_group)."""
        try:
            found = [child for child in psutil.Process(self.pid).children() if child.is_running()]
        except psutil.NoSuchProcess:
            found = []
        self.seen_children.update(found)
        return found

    def kill_group(self) -> None:
        """SIGKILL the whole process group (the process and its pool), as a lost machine would.

        Only while the process itself lives is its pid surely still its group's id; once it has been
        reaped, the children it was seen with are killed one by one instead (psutil checks each one's
        start time, so a reused pid is never hit)."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.children()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        survivors = [child for child in self.seen_children if child.is_running()]
        for child in survivors:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(survivors, timeout=10)

    def terminate(self) -> None:
        """SIGTERM: a worker's warm shutdown, the api's graceful one."""
        if self.running():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGTERM)


@dataclass(frozen=True)
class Download:
    files: dict[str, bytes]  # name -> content, as downloaded
    sha256: dict[str, str]  # name -> sha256 of the downloaded content (equal to the listed one)


@dataclass
class Deployment:
    root: Path
    data_dir: Path
    database_url: str
    models_root: Path
    redis: RedisServer
    env: dict[str, str]
    sessions: sessionmaker[Session]
    api: Process | None = None
    client: httpx.Client = field(default_factory=httpx.Client)
    workers: dict[str, Process] = field(default_factory=dict)
    hostnames: dict[str, str] = field(default_factory=dict)
    all_processes: list[Process] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    # --- processes -------------------------------------------------------------------------------

    def cli(self, name: str, *arguments: str) -> Process:
        argv = [sys.executable, "-m", "service.cli", *arguments]
        process = Process(name, argv, dict(self.env), self.root / f"{name}.log")
        self.all_processes.append(process)
        return process

    def start_api(self, *, wait: bool = True) -> None:
        self.api = self.cli("api", "api", "--port", str(self.port)).start()
        if wait:
            self.wait_api_ready()

    def wait_api_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return self.client.get("/readyz", timeout=2).status_code == 200
            return False

        api = self.api
        assert api is not None
        self._poll(ready, timeout, "the api to be ready", api.running)

    def start_worker(self, name: str, *, hostname: str | None = None, wait: bool = True) -> Process:
        """Start worker `name` (Celery node `hostname`, default `<name>@faults`); by default, return
        once Celery says it is ready (after its start-up hooks)."""
        hostname = hostname or f"{name}@{HOST}"
        log_name = f"worker-{name}-{sum(p.name == name for p in self.all_processes)}"
        process = self.cli(name, "worker", "--hostname", hostname, "--concurrency", "1")
        process.log_path = self.root / f"{log_name}.log"
        self.workers[name] = process.start()
        self.hostnames[name] = hostname
        if wait:
            self.wait_ready(name)
        return process

    def wait_ready(self, name: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
        process = self.workers[name]
        ready = f"{self.hostnames[name]} ready."
        self._poll(lambda: ready in process.log(), timeout, f"worker {name} to be ready", process.running)
        process.children()  # its pool, remembered

    def kill_worker(self, name: str, *, child_only: bool = False) -> list[int]:
        """SIGKILL worker `name`'s whole process group, or only its pool processes (the Celery main
        process lives on and starts new ones); returns the pids killed."""
        process = self.workers[name]
        if not child_only:
            pid = process.pid
            process.kill_group()
            return [pid]
        children = process.children()
        assert children, f"worker {name} has no pool process to kill"
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(children, timeout=10)
        return [child.pid for child in children]

    def stop_all(self) -> None:
        """SIGKILL every worker's process group, SIGTERM the api (then SIGKILL its group after a grace
        period): no pool process outlives the test. Workers are not given a warm shutdown, which takes
        Celery seconds even when idle; nothing after the test needs one."""
        for process in self.all_processes:
            if process is self.api:
                process.terminate()
            else:
                process.kill_group()
        if self.api is not None and self.api.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.api.popen.wait(timeout=STOP_GRACE_SECONDS)
            self.api.kill_group()

    def logs(self, tail: int = 6000) -> dict[str, str]:
        """The tail of every process's log, by log file name."""
        found = {process.log_path.name: process.log()[-tail:] for process in self.all_processes}
        return found | {"redis.log": self.redis.log()[-tail:]}

    # --- the API ---------------------------------------------------------------------------------

    def upload(self, lines: Sequence[str], *, filename: str = "data.jsonl") -> str:
        body = ("\n".join(lines) + "\n").encode()
        response = self.client.post(
            "/v1/files", files={"file": (filename, body, "application/jsonl")}, data={"purpose": "fine-tune"}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def slow_job(self, **hyperparameters: Any) -> dict[str, Any]:
        """A LoRA job on the tiny BERT that trains SLOW_TOTAL_STEPS steps, a metrics event each."""
        training = self.upload(
            sentiment_lines(SLOW_EXAMPLES, seed=1, words=SLOW_WORDS), filename="train.jsonl"
        )
        validation = self.upload(sentiment_lines(16, seed=2, words=SLOW_WORDS), filename="validation.jsonl")
        return {
            "base_model": "tiny-bert",
            "training_file": training,
            "validation_file": validation,
            "method": {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
            "hyperparameters": {
                "epochs": SLOW_EPOCHS,
                "batch_size": SLOW_BATCH,
                "learning_rate": 1e-2,
                "logging_steps": 1,
                "max_seq_length": 128,
            }
            | hyperparameters,
        }

    def quick_job(self) -> dict[str, Any]:
        """A LoRA job on the tiny BERT that trains 8 steps, in a second or two."""
        spec = self.slow_job()
        training = self.upload(sentiment_lines(32, seed=3), filename="quick-train.jsonl")
        validation = self.upload(sentiment_lines(8, seed=4), filename="quick-validation.jsonl")
        return spec | {"training_file": training, "validation_file": validation}

    def submit(self, spec: Mapping[str, Any], *, headers: Mapping[str, str] | None = None) -> str:
        response = self.client.post("/v1/jobs", json=dict(spec), headers=dict(headers or {}))
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def wait_for(
        self, job_id: str, until: str | Callable[[dict[str, Any]], bool], *, timeout: float
    ) -> dict[str, Any]:
        """Poll the job until it has status `until` (failing at once on another final status) or
        `until(job)` holds; returns the job. The API must answer meanwhile."""
        found: dict[str, Any] = {}

        def check() -> bool:
            job = self.job(job_id)
            found["job"] = job
            if isinstance(until, str):
                if job["status"] in FINISHED and job["status"] != until:
                    raise AssertionError(f"job {job_id} ended {job['status']}, not {until}: {job['error']}")
                return bool(job["status"] == until)
            return until(job)

        self._poll(check, timeout, f"job {job_id} to be {until if isinstance(until, str) else 'ready'}")
        return found["job"]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Every event of the job, oldest first, through the API's `after` cursor."""
        collected: list[dict[str, Any]] = []
        while True:
            params = {"limit": 100} | ({"after": collected[-1]["id"]} if collected else {})
            response = self.client.get(f"/v1/jobs/{job_id}/events", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            collected += page["data"]
            if not page["has_more"]:
                return collected

    def metrics_steps(self, job_id: str) -> list[int]:
        return [int(e["data"]["step"]) for e in self.events(job_id) if e["type"] == "metrics"]

    def last_step(self, job_id: str) -> int:
        """The newest metrics event's step (0 before the first), read from the database: cheap to poll."""
        with self.sessions() as session:
            rows = session.scalars(
                select(JobEvent.data)
                .where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
                .order_by(JobEvent.id.desc())
                .limit(1)
            ).all()
        return int(rows[0]["step"]) if rows else 0

    def claims(self, job_id: str) -> list[dict[str, Any]]:
        """The job's `running` status events: one per attempt that claimed it."""
        return [
            event
            for event in self.events(job_id)
            if event["type"] == "status" and event["data"].get("status") == "running"
        ]

    def resumed_from(self, job_id: str) -> list[int]:
        """The steps of the job's `resumed from step k` events."""
        return [
            int(event["data"]["resumed_from_step"])
            for event in self.events(job_id)
            if "resumed_from_step" in event["data"]
        ]

    def download(self, job_id: str) -> Download:
        """Every artifact file, each checked against the listing's bytes and sha256 and the header."""
        listing = self.client.get(f"/v1/jobs/{job_id}/artifacts")
        assert listing.status_code == 200, listing.text
        files: dict[str, bytes] = {}
        digests: dict[str, str] = {}
        for artifact in listing.json()["data"]:
            response = self.client.get(artifact["url"])
            assert response.status_code == 200, (artifact["name"], response.text)
            digest = hashlib.sha256(response.content).hexdigest()
            assert len(response.content) == artifact["bytes"], artifact["name"]
            assert digest == artifact["sha256"] == response.headers["X-Content-SHA256"], artifact["name"]
            files[artifact["name"]] = response.content
            digests[artifact["name"]] = digest
        return Download(files, digests)

    # --- the database, the broker and the data folder ----------------------------------------------

    def artifact_rows(self, job_id: str) -> list[tuple[str, int, str]]:
        with self.sessions() as session:
            rows = session.execute(
                select(Artifact.name, Artifact.bytes, Artifact.sha256).where(Artifact.job_id == job_id)
            ).all()
        return sorted((name, size, digest) for name, size, digest in rows)

    def queue_length(self, queue: str = "cpu") -> int:
        """Messages waiting in the Redis list Celery keeps for `queue`."""
        client = redis.Redis.from_url(self.redis.url)
        try:
            return int(client.llen(queue))
        finally:
            client.close()

    def published(self, job_id: str) -> dict[str, list[str]]:
        """Each folder of the job's artifacts that holds a publish, relative to the data folder, with its
        files: `artifacts/<job>/attempt-<n>/` (one per attempt that published), or, in the layout from
        before attempts, `artifacts/<job>/` itself."""
        root = self.data_dir / "artifacts" / job_id
        if not root.is_dir():
            return {}
        attempts = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"attempt-\d+", p.name)]
        found = {}
        for folder in attempts or [root]:
            files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            if files:
                found[folder.relative_to(self.data_dir).as_posix()] = files
        return found

    def leftover_folders(self) -> list[str]:
        """Scratch and staging entries still in the data folder, relative to it: everything below a
        folder other than KEPT_FOLDERS (work/, uploads/, resume stores), and in those the hidden ones
        (`.step-3.partial`, `.<job>-leftover-…`)."""
        leftovers = []
        for top in sorted(p for p in self.data_dir.iterdir() if p.is_dir()):
            for entry in sorted(top.iterdir()):
                if top.name not in KEPT_FOLDERS or entry.name.startswith("."):
                    leftovers.append(entry.relative_to(self.data_dir).as_posix())
                elif top.name == "checkpoints" and entry.is_dir():
                    leftovers += [
                        hidden.relative_to(self.data_dir).as_posix()
                        for hidden in entry.iterdir()
                        if hidden.name.startswith(".")
                    ]
        return leftovers

    def _poll(
        self,
        check: Callable[[], bool],
        timeout: float,
        what: str,
        alive: Callable[[], bool] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if alive is not None and not alive():
                raise AssertionError(f"gave up waiting for {what}: the process exited")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.1)


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new empty database on the server `admin_url` reaches; yields its URL, drops it afterwards."""
    name = f"deltatune_faults_{secrets.token_hex(4)}"
    _admin(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        # FORCE: a killed worker's connection must not keep the database alive.
        with contextlib.suppress(psycopg.OperationalError):
            _admin(admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _admin(admin_url: str, statement: sql.Composed) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as connection:
        connection.execute(statement)


@contextmanager
def deploy(
    root: Path,
    *,
    admin_url: str,
    models_root: Path,
    workers: Sequence[str] = ("w1",),
    data_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    opened: list["Deployment"] | None = None,
) -> Iterator[Deployment]:
    """A fresh database on `admin_url`'s server, migrated to head, a Redis of its own,
    the api and `workers` (each ready); everything stopped and dropped on exit. `opened` collects the
    deployment, so a failing test can show its logs."""
    data_dir = data_dir or root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    with start_redis() as broker, fresh_database(admin_url) as database_url:
        variables = {
            "DELTATUNE_DATABASE_URL": database_url,
            "DELTATUNE_BROKER_URL": broker.url,
            "DELTATUNE_DATA_DIR": str(data_dir),
            "DELTATUNE_MODEL_DIRS": json.dumps([str(models_root)]),
            "DELTATUNE_AUTO_MIGRATE": "false",
            "DELTATUNE_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            # Two workers, the api, PostgreSQL and the test share a few cores: torch's default of a
            # thread per core makes each of its parallel regions wait for a descheduled thread, and a
            # step 5-10 times slower, with wide swings.
            "OMP_NUM_THREADS": "1",
        }
        engine = make_engine(Settings(database_url=database_url, data_dir=data_dir).database_url)
        deployment = Deployment(
            root=root,
            data_dir=data_dir,
            database_url=database_url,
            models_root=models_root,
            redis=broker,
            env=clean_environment(**(variables | LEASE_ENV | dict(env or {}))),
            sessions=sessionmaker(engine, expire_on_commit=False),
        )
        if opened is not None:
            opened.append(deployment)
        try:
            upgrade_to_head(engine.url.render_as_string(hide_password=False))  # what `deltatune migrate` does
            with deployment.sessions() as session:
                key = create_api_key(session, owner_name="faults")
            deployment.client = httpx.Client(
                base_url=f"http://127.0.0.1:{deployment.port}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            # All started at once, then waited for: each spends seconds importing.
            deployment.start_api(wait=False)
            for name in workers:
                deployment.start_worker(name, wait=False)
            deployment.wait_api_ready()
            for name in workers:
                deployment.wait_ready(name)
            yield deployment
        finally:
            deployment.stop_all()
            deployment.client.close()
            engine.dispose()
