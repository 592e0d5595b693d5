"""A fleet under fire: the API, N workers, PostgreSQL and Redis, many tiny jobs, a worker killed now and then.

    .venv/bin/python -m benchmarks.fleet                   # 2,000 jobs, 4 workers, a kill every 20 s
    .venv/bin/python -m benchmarks.fleet --quick           # a smoke run: 100 jobs, a kill every 15 s
    .venv/bin/python -m benchmarks.fleet --jobs 400 --workers 4 --kill-every 15

Not a timed test: it answers issue 12's questions about the queue itself, and docs/scaling.md works
from its figures. It reuses the fault suite's harness (tests.faults.harness: real `deltatune api` and
`deltatune worker` processes, each in its own process group, over a fresh database and a Redis of its
own, every process stopped by its own pid at the end), so it must run from a checkout with the tests.

What runs: a PostgreSQL of its own (tests.faults.servers.start_postgres, which sets fsync=off),
restarted once with `pg_stat_statements` preloaded so every statement is counted by its text; a
Redis of its own; the API; `--workers` workers of concurrency 1. Every job is the smallest real
training through the whole path: a LoRA on the tiny BERT of tests/tiny_models.py, 24 examples, batch
4, 1 epoch (6 steps, a metrics event each), a resume point every 2 steps, published as an artifact.
Jobs are POSTed to /v1/jobs in bursts of `--burst`, the next burst once fewer than that are queued.
Every `--kill-every` seconds a random worker's whole process group gets SIGKILL; after `--pause`
seconds it is started again under a new hostname.

Measured, and printed as a table and one JSON line:
- jobs lost: not succeeded once the queue has drained (or `--drain-seconds` after the last submit);
- jobs run twice to success: more than one `succeeded` status event, more than one published
  `attempt-<n>` folder, or artifact rows that are not one set (a re-run after a kill is fine);
- per job, from the job's status events (their created_at is the writing worker's clock):
  queued→claimed, claim→training started (loading the model and data), the wall of the attempt that
  succeeded, its `train_seconds` metric, publish (the `exporting the artifact` event to the
  `succeeded` commit), and queue overhead = wall - train_seconds;
- client-side costs of the queue's own writes, timed in this process against the same database
  after the run (claim, fenced event write, heartbeat, resume-point fence, publish commit);
- the database: rows per table / job at the end, pg_stat_database deltas (commits, tuples
  inserted/updated/deleted/fetched) and pg_stat_statements (calls and execution time by statement)
  over the jobs' window, and over an idle window before it (workers polling with no job);
- Redis: INFO commandstats deltas over the same windows, by command.
"""

import argparse
import contextlib
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import redis

from tests.faults.harness import FINISHED, Deployment, deploy, sentiment_lines
from tests.faults.servers import PostgresServer, start_postgres
from tests.tiny_models import make_tiny_bert

logger = logging.getLogger("benchmarks.fleet")

T = TypeVar("T")

# Longer than the fault suite's 3 s lease: on a loaded 2-core machine a 3 s lease expires under live
# workers now and then, and this benchmark is about kills, not stalls.
FLEET_ENV = {
    "DELTATUNE_LEASE_SECONDS": "8",
    "DELTATUNE_HEARTBEAT_SECONDS": "1",
    "DELTATUNE_SWEEP_SECONDS": "2",
    "DELTATUNE_RESEND_AFTER_SECONDS": "5",
    "DELTATUNE_RESUME_EVERY_STEPS": "2",
}
EXAMPLES = 24
BATCH = 4
PROBE_JOBS = 10
PROBE_WRITES = 10
STATS_FLUSH_SECONDS = 11  # PostgreSQL 15 flushes an idle backend's counters within 10 s
STATEMENTS_SHOWN = 25
POLL_SECONDS = 1.0
STATUS_QUERY = "SELECT status, count(*) FROM jobs GROUP BY status"
CONNECTIONS_QUERY = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
OWN_QUERIES = frozenset({STATUS_QUERY, CONNECTIONS_QUERY})


@dataclass
class Window:
    """Counters over one window of the run: database, statements, Redis."""

    seconds: float = 0.0
    database: dict[str, int] = field(default_factory=dict)
    statements: list[dict[str, Any]] = field(default_factory=list)
    redis: dict[str, int] = field(default_factory=dict)


def main() -> None:
    options = parse_options()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    command = " ".join(["python -m benchmarks.fleet", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="deltatune-fleet-") as scratch, own_postgres() as postgres:
        root = Path(scratch)
        models = root / "models"
        make_tiny_bert(models / "tiny-bert")
        names = [f"w{index + 1}" for index in range(options.workers)]
        (root / "deployment").mkdir()
        with deploy(
            root / "deployment", admin_url=postgres.url, models_root=models, workers=names, env=FLEET_ENV
        ) as deployment:
            figures = run_fleet(deployment, postgres, options)
    figures["command"] = command
    print_report(figures)


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--kill-every", type=float, default=20.0, help="seconds between worker kills (0: none)"
    )
    parser.add_argument("--pause", type=float, default=2.0, help="seconds a killed worker stays down")
    parser.add_argument("--burst", type=int, default=20, help="jobs POSTed at once")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="the idle window's length")
    parser.add_argument("--drain-seconds", type=float, default=600.0, help="after the last submit")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="100 jobs, a kill every 15 s")
    options = parser.parse_args()
    if options.quick:
        options.jobs, options.kill_every = 100, 15.0
    return options


@contextmanager
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the benchmark's own, with pg_stat_statements loaded (a restart after ALTER SYSTEM)."""
    with start_postgres() as server:
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        server.stop()
        server.start()
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield server


# --- the run -------------------------------------------------------------------------------------------


def run_fleet(
    deployment: Deployment, postgres: PostgresServer, options: argparse.Namespace
) -> dict[str, Any]:
    rng = random.Random(options.seed)
    database = deployment.database_url.rsplit("/", 1)[1]
    counters = Counters(postgres.url, database, deployment.redis.url)
    spec = job_spec(deployment)
    # The idle window: every worker ready, no job: what polling alone costs.
    time.sleep(STATS_FLUSH_SECONDS)
    idle = counters.window(lambda: time.sleep(options.idle_seconds))
    fleet = Fleet(deployment, rng, options)
    try:
        jobs = counters.window(lambda: fleet.run(spec), after=lambda: settle(deployment))
    finally:
        fleet.close()
    figures: dict[str, Any] = {
        "options": dict(vars(options)),
        "settings": FLEET_ENV,
        "wall_seconds": round(jobs.seconds, 1),
        "kills": fleet.kills,
        "submitted": len(fleet.job_ids),
    }
    figures |= outcomes(deployment, fleet.job_ids)
    figures["per_job"] = per_job_times(deployment, fleet.job_ids)
    figures["jobs_per_minute"] = round(figures["succeeded"] / jobs.seconds * 60, 2)
    figures["rows"] = table_rows(deployment, len(fleet.job_ids))
    # The benchmark's own polls out: their commits, their connection, and the rows their scans returned.
    jobs.database["xact_commit"] -= 2 * fleet.polls  # two autocommitted statements each
    jobs.database["sessions"] -= 1
    jobs.database["tup_returned"] -= fleet.polled_rows
    jobs.statements = [entry for entry in jobs.statements if entry["query"] not in OWN_QUERIES]
    figures["benchmark_polls"] = fleet.polls
    figures["connections_held"] = {
        "max": max(fleet.connections),
        "mean": round(statistics.fmean(fleet.connections), 1),
        "workers": options.workers,
        "api_processes": 1,
    }
    figures["database"] = per_job_counts(jobs.database, len(fleet.job_ids))
    figures["database_idle_per_worker_second"] = rates(idle.database, idle.seconds * options.workers)
    figures["redis"] = per_job_counts(jobs.redis, len(fleet.job_ids))
    figures["redis_idle_per_worker_second"] = rates(idle.redis, idle.seconds * options.workers)
    figures["statements"] = statements_per_job(jobs.statements, len(fleet.job_ids))
    figures["statements_idle"] = statements_per_job(idle.statements, 1)  # per window, not per job
    figures["write_costs_ms"] = probe_write_costs(deployment, spec)
    return figures


def job_spec(deployment: Deployment) -> dict[str, Any]:
    training = deployment.upload(sentiment_lines(EXAMPLES, seed=3), filename="fleet-train.jsonl")
    return {
        "base_model": "tiny-bert",
        "training_file": training,
        "method": {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
        "hyperparameters": {
            "epochs": 1,
            "batch_size": BATCH,
            "learning_rate": 1e-2,
            "logging_steps": 1,
            "max_seq_length": 32,
        },
    }


@dataclass
class Fleet:
    """Submits the jobs in bursts and kills and restarts workers until every job has finished."""

    deployment: Deployment
    rng: random.Random
    options: argparse.Namespace
    job_ids: list[str] = field(default_factory=list)
    kills: int = 0
    restarts: dict[str, float] = field(default_factory=dict)  # name -> when to start it again
    polls: int = 0  # this process's own status queries, taken out of the database's counts
    polled_rows: int = 0  # the rows they scanned (the jobs table is small: a sequential scan)
    poller: psycopg.Connection[Any] | None = None  # one connection for every poll
    connections: list[int] = field(default_factory=list)  # the fleet's connections at each poll

    def run(self, spec: dict[str, Any]) -> None:
        options = self.options
        next_kill = time.monotonic() + options.kill_every if options.kill_every > 0 else float("inf")
        last_submit = time.monotonic()
        while True:
            counts = self.status_counts()
            unfinished = sum(n for status, n in counts.items() if status not in FINISHED)
            if len(self.job_ids) < options.jobs and counts.get("queued", 0) < options.burst:
                self.submit_burst(spec)
                last_submit = time.monotonic()
            elif len(self.job_ids) >= options.jobs and unfinished == 0 and not self.restarts:
                return
            elif len(self.job_ids) >= options.jobs and time.monotonic() - last_submit > options.drain_seconds:
                logger.warning("gave up draining: %d jobs unfinished", unfinished)
                return
            now = time.monotonic()
            if now >= next_kill:
                self.kill_one()
                next_kill = now + options.kill_every
            self.restart_due()
            time.sleep(POLL_SECONDS)

    def submit_burst(self, spec: dict[str, Any]) -> None:
        for _ in range(min(self.options.burst, self.options.jobs - len(self.job_ids))):
            self.job_ids.append(self.deployment.submit(spec))
        logger.info("submitted %d of %d jobs", len(self.job_ids), self.options.jobs)

    def kill_one(self) -> None:
        alive = [name for name, process in self.deployment.workers.items() if process.running()]
        if not alive:
            return
        name = self.rng.choice(alive)
        self.deployment.kill_worker(name)
        self.kills += 1
        self.restarts[name] = time.monotonic() + self.options.pause
        logger.info("killed worker %s (kill %d)", self.deployment.hostnames[name], self.kills)

    def restart_due(self) -> None:
        for name, when in list(self.restarts.items()):
            if time.monotonic() >= when:
                hostname = f"{name}-{self.kills}@fleet"
                self.deployment.start_worker(name, hostname=hostname, wait=False)
                del self.restarts[name]

    def status_counts(self) -> dict[str, int]:
        """The jobs by status, and the connections the fleet holds now (sampled into `connections`)."""
        if self.poller is None:
            self.poller = psycopg.connect(self.deployment.database_url, autocommit=True)
        rows = self.poller.execute(STATUS_QUERY).fetchall()
        (held,) = self.poller.execute(CONNECTIONS_QUERY).fetchone() or (0,)
        self.connections.append(int(held))
        self.polls += 1
        self.polled_rows += sum(int(count) for _, count in rows)
        return {status: int(count) for status, count in rows}

    def close(self) -> None:
        if self.poller is not None:
            self.poller.close()


def settle(deployment: Deployment) -> None:
    """Every worker stopped (their backends exit and flush their counters), then the API's flushed."""
    for process in deployment.workers.values():
        process.kill_group()
    time.sleep(STATS_FLUSH_SECONDS)


# --- the counters ----------------------------------------------------------------------------------------

DATABASE_COLUMNS = (
    "sessions", "xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated",
    "tup_deleted", "blks_read", "blks_hit",
)  # fmt: skip
# Commands the benchmark itself sends to Redis while it measures.
OWN_REDIS_COMMANDS = frozenset({"info", "config|resetstat", "config"})


@dataclass
class Counters:
    admin_url: str
    database: str
    redis_url: str

    def window(self, during: Callable[[], None], *, after: Callable[[], None] | None = None) -> Window:
        before = self.snapshot()
        started = time.monotonic()
        during()
        seconds = time.monotonic() - started
        if after is not None:
            after()
        now = self.snapshot()
        return Window(
            seconds=seconds,
            database={k: now["database"][k] - before["database"][k] for k in DATABASE_COLUMNS},
            statements=statement_deltas(before["statements"], now["statements"]),
            redis=counter_deltas(before["redis"], now["redis"]),
        )

    def snapshot(self) -> dict[str, Any]:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_stat_clear_snapshot()")
            row = admin.execute(
                f"SELECT {', '.join(DATABASE_COLUMNS)} FROM pg_stat_database WHERE datname = %s",
                (self.database,),
            ).fetchone()
            assert row is not None, self.database
            statements = admin.execute(
                "SELECT queryid, query, calls, total_exec_time, rows FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)",
                (self.database,),
            ).fetchall()
        client = redis.Redis.from_url(self.redis_url)
        try:
            commandstats = client.info("commandstats")
        finally:
            client.close()
        return {
            "database": dict(zip(DATABASE_COLUMNS, (int(value) for value in row), strict=True)),
            "statements": {
                queryid: (query, calls, total, rows) for queryid, query, calls, total, rows in statements
            },
            "redis": {
                name.removeprefix("cmdstat_"): int(stats["calls"])
                for name, stats in commandstats.items()
                if name.removeprefix("cmdstat_") not in OWN_REDIS_COMMANDS
            },
        }


def counter_deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    found = {name: after[name] - before.get(name, 0) for name in after}
    return dict(sorted(((k, v) for k, v in found.items() if v), key=lambda item: -item[1]))


def statement_deltas(
    before: dict[int, tuple[Any, ...]], after: dict[int, tuple[Any, ...]]
) -> list[dict[str, Any]]:
    found = []
    for queryid, (query, calls, total, rows) in after.items():
        _, calls0, total0, rows0 = before.get(queryid, (query, 0, 0.0, 0))
        if calls > calls0:
            found.append(
                {"query": query, "calls": calls - calls0, "ms": total - total0, "rows": rows - rows0}
            )
    return sorted(found, key=lambda entry: -entry["calls"])


def per_job_counts(counts: dict[str, int], jobs: int) -> dict[str, Any]:
    return {"total": counts, "per_job": {name: round(value / jobs, 2) for name, value in counts.items()}}


def rates(counts: dict[str, int], worker_seconds: float) -> dict[str, float]:
    return {name: round(value / worker_seconds, 3) for name, value in counts.items()}


def statements_per_job(statements: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    """The statements by calls, each with calls and execution milliseconds per job (or per window)."""
    shown = []
    for entry in statements[:STATEMENTS_SHOWN]:
        text = " ".join(entry["query"].split())
        shown.append(
            {
                "query": text[:110],
                "calls_per_job": round(entry["calls"] / jobs, 2),
                "ms_per_job": round(entry["ms"] / jobs, 3),
                "mean_ms": round(entry["ms"] / entry["calls"], 3),
            }
        )
    return shown


# --- what came out ---------------------------------------------------------------------------------------


def outcomes(deployment: Deployment, job_ids: list[str]) -> dict[str, Any]:
    """Lost (not succeeded) and run-twice-to-success jobs, and how many attempts the kills cost."""
    statuses: Counter[str] = Counter()
    twice, claim_mismatches, attempts, rerun = [], [], 0, 0
    succeeded_events = events_by_job(deployment, "succeeded")
    claims = events_by_job(deployment, "running")
    with psycopg.connect(deployment.database_url) as connection:
        rows = connection.execute("SELECT id, status, attempt FROM jobs").fetchall()
        artifact_rows = connection.execute("SELECT job_id, name FROM artifacts").fetchall()
    names_by_job: dict[str, list[str]] = defaultdict(list)
    for job_id, name in artifact_rows:
        names_by_job[job_id].append(name)
    by_id = {job_id: (status, attempt) for job_id, status, attempt in rows}
    for job_id in job_ids:
        status, attempt = by_id[job_id]
        statuses[status] += 1
        attempts += attempt
        rerun += attempt > 1
        names = names_by_job[job_id]
        published = deployment.published(job_id)
        if len(succeeded_events[job_id]) > 1 or len(published) > 1 or len(names) != len(set(names)):
            twice.append(job_id)
        if len(claims[job_id]) != attempt:  # every claim writes its `running` event: should not happen
            claim_mismatches.append(job_id)
    lost = [job_id for job_id in job_ids if by_id[job_id][0] != "succeeded"]
    return {
        "statuses": dict(statuses),
        "succeeded": statuses["succeeded"],
        "lost": len(lost),
        "lost_ids": lost[:20],
        "run_twice_to_success": len(twice),
        "run_twice_ids": twice[:20],
        "attempts": attempts,
        "jobs_rerun": rerun,
        "claims_not_matching_attempts": claim_mismatches[:20],
        "leftovers": deployment.leftover_folders()[:20],
    }


def events_by_job(deployment: Deployment, status: str) -> dict[str, list[datetime]]:
    found: dict[str, list[datetime]] = defaultdict(list)
    with psycopg.connect(deployment.database_url) as connection:
        rows = connection.execute(
            "SELECT job_id, created_at FROM job_events WHERE type = 'status' AND data->>'status' = %s",
            (status,),
        ).fetchall()
    for job_id, created_at in rows:
        found[job_id].append(created_at)
    return found


def per_job_times(deployment: Deployment, job_ids: list[str]) -> dict[str, dict[str, float]]:
    """Seconds per job, from each job's events in order (median, p95, mean of each figure)."""
    with psycopg.connect(deployment.database_url) as connection:
        events = connection.execute(
            "SELECT job_id, type, message, data, created_at FROM job_events ORDER BY id"
        ).fetchall()
        jobs = connection.execute("SELECT id, created_at, metrics FROM jobs").fetchall()
    by_job: dict[str, list[tuple[str, str, dict[str, Any], datetime]]] = defaultdict(list)
    for job_id, kind, message, data, created_at in events:
        by_job[job_id].append((kind, message, data, created_at))
    figures: dict[str, list[float]] = defaultdict(list)
    for job_id, created_at, metrics in jobs:
        if job_id in job_ids:
            for name, seconds in job_times(created_at, metrics or {}, by_job[job_id]).items():
                figures[name].append(seconds)
    return {name: summary(values) for name, values in figures.items()}


def job_times(
    created_at: datetime, metrics: dict[str, Any], events: list[tuple[str, str, dict[str, Any], datetime]]
) -> dict[str, float]:
    """One job's figures: every claim's wait (from submit or requeue), and the succeeded attempt's."""
    found: dict[str, float] = {}
    queued_at: datetime | None = created_at
    claimed_at = started_at = exporting_at = None
    for kind, message, data, at in events:
        status = data.get("status") if kind == "status" else None
        if status == "queued" and queued_at is None:
            queued_at = at  # queued again after a lost lease
        elif status == "running":
            key = "queued_to_claimed" if "queued_to_claimed" not in found else "requeued_to_claimed"
            if queued_at is not None:
                found[key] = (at - queued_at).total_seconds()
            queued_at, claimed_at, started_at, exporting_at = None, at, None, None
        elif kind == "message" and message.startswith("training started") and claimed_at is not None:
            started_at = at
        elif kind == "message" and message.startswith("exporting the artifact"):
            exporting_at = at
        elif status == "succeeded" and claimed_at is not None:
            wall = (at - claimed_at).total_seconds()
            found["attempt_wall"] = wall
            if started_at is not None:
                found["claimed_to_training_started"] = (started_at - claimed_at).total_seconds()
            if exporting_at is not None:
                found["publish"] = (at - exporting_at).total_seconds()
            if isinstance(metrics.get("train_seconds"), int | float):
                found["train_seconds"] = float(metrics["train_seconds"])
                found["queue_overhead"] = wall - float(metrics["train_seconds"])
    found["events"] = float(len(events))
    return found


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), 3),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def table_rows(deployment: Deployment, jobs: int) -> dict[str, dict[str, float]]:
    """Each table's rows at the end, per job, and its bytes (table, indexes and TOAST)."""
    found = {}
    with psycopg.connect(deployment.database_url) as connection:
        tables = connection.execute(
            "SELECT relname, pg_total_relation_size(relid), n_tup_ins, n_tup_upd, n_tup_del "
            "FROM pg_stat_user_tables ORDER BY relname"
        ).fetchall()
        for name, size, inserted, updated, deleted in tables:
            (count,) = connection.execute(f'SELECT count(*) FROM "{name}"').fetchone() or (0,)
            found[name] = {
                "rows": int(count),
                "rows_per_job": round(count / jobs, 2),
                "bytes_per_job": round(size / jobs),
                "inserted": int(inserted),
                "updated": int(updated),
                "deleted": int(deleted),
            }
    return found


# --- client-side cost of the queue's writes ---------------------------------------------------------------


def probe_write_costs(deployment: Deployment, spec: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Time, in this process, the writes a worker's attempt makes, on PROBE_JOBS more jobs: with every
    worker stopped they stay queued, and this process claims each as worker `probe@fleet`, writes
    PROBE_WRITES of each kind, and ends it (an end without files: the figures above are taken)."""
    from core.models import JobStatus  # the worker's code path, imported only here
    from tuning.events import Event
    from worker.lifecycle import JOBS, Attempt
    from worker.progress import ProgressRecorder

    timings: dict[str, list[float]] = defaultdict(list)

    def timed(name: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = call()
        timings[name].append((time.perf_counter() - started) * 1000)
        return result

    # Each call is bound to this iteration's values through its defaults, as the loop runs it at once.
    for _ in range(PROBE_JOBS):
        job_id = deployment.submit(spec)

        def claim(job_id: str = job_id) -> Attempt | None:
            return JOBS.claim(
                deployment.sessions, job_id, worker="probe@fleet", lease_seconds=60, outage_seconds=30
            )

        attempt = timed("claim", claim)
        assert attempt is not None, "the probe could not claim its job"
        recorder = ProgressRecorder(attempt)
        for step in range(1, PROBE_WRITES + 1):
            data = {"step": step, "total_steps": PROBE_WRITES, "loss": 0.5, "learning_rate": 1e-3}

            def event_write(data: dict[str, Any] = data, recorder: ProgressRecorder = recorder) -> None:
                recorder(Event("metrics", f"step {data['step']}", data))

            def resume_point_fence(attempt: Attempt = attempt) -> None:
                attempt.write(lambda session: None)

            timed("event_write", event_write)
            timed("heartbeat", attempt.renew)
            timed("resume_point_fence", resume_point_fence)

        def finish_commit(attempt: Attempt = attempt) -> None:
            attempt.finish(JobStatus.SUCCEEDED, "succeeded (probe)")

        timed("finish_commit", finish_commit)
    return {name: summary(values) for name, values in timings.items()}


# --- the report ------------------------------------------------------------------------------------------


def print_report(figures: dict[str, Any]) -> None:
    print(f"\n{figures['command']}")
    print(
        f"jobs {figures['submitted']}, succeeded {figures['succeeded']}, LOST {figures['lost']}, "
        f"RUN TWICE TO SUCCESS {figures['run_twice_to_success']}; kills {figures['kills']}, "
        f"attempts {figures['attempts']}, jobs re-run {figures['jobs_rerun']}; "
        f"{figures['jobs_per_minute']} jobs/min over {figures['wall_seconds']} s"
    )
    print("connections held by the API and the workers:", json.dumps(figures["connections_held"]))
    print(f"\n{'per job (s)':34} {'median':>8} {'p95':>8} {'mean':>8} {'n':>6}")
    for name, row in figures["per_job"].items():
        print(f"{name:34} {row['median']:8.3f} {row['p95']:8.3f} {row['mean']:8.3f} {row['n']:6d}")
    print(f"\n{'write, timed here (ms)':34} {'median':>8} {'p95':>8} {'mean':>8} {'n':>6}")
    for name, row in figures["write_costs_ms"].items():
        print(f"{name:34} {row['median']:8.2f} {row['p95']:8.2f} {row['mean']:8.2f} {row['n']:6d}")
    print(f"\n{'table':24} {'rows/job':>9} {'bytes/job':>10} {'inserted':>9} {'updated':>9} {'deleted':>9}")
    for name, row in figures["rows"].items():
        print(
            f"{name:24} {row['rows_per_job']:9.2f} {row['bytes_per_job']:10d} {row['inserted']:9d} "
            f"{row['updated']:9d} {row['deleted']:9d}"
        )
    print("\ndatabase per job:", json.dumps(figures["database"]["per_job"]))
    print("database idle, per worker-second:", json.dumps(figures["database_idle_per_worker_second"]))
    print("redis per job:", json.dumps(figures["redis"]["per_job"]))
    print("redis idle, per worker-second:", json.dumps(figures["redis_idle_per_worker_second"]))
    print(f"\n{'statement (pg_stat_statements)':112} {'calls/job':>9} {'ms/job':>8} {'mean ms':>8}")
    for row in figures["statements"]:
        print(
            f"{row['query']:112} {row['calls_per_job']:9.2f} {row['ms_per_job']:8.3f} {row['mean_ms']:8.3f}"
        )
    print("\n" + json.dumps(figures, default=str))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
