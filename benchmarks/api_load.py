"""The API under load: `GET /v1/jobs` throughput and latency, one server process against several.

    .venv/bin/python -m benchmarks.api_load                       # 1 process, then one per core
    .venv/bin/python -m benchmarks.api_load --processes 1,2,4 --seconds 10

The distributed layout as compose runs it: `deltatune api` over PostgreSQL (a database of its own,
created on the local server and dropped at the end), the broker kombu's filesystem transport in a
scratch folder (nothing is consumed; GET never sends). One owner has 40 jobs, submitted through the
API; every request lists its newest 20, the default page, each with its full spec. No worker runs,
so the jobs do not change: after the first page each job is answered from the bytes its API process
kept (service/job_answers.py), as for clients polling jobs that have not moved since; a page whose
20 jobs all changed costs about twice the server CPU (README, "The API").

For each process count, three phases, each `--seconds` long, from one load generator process:

- closed loop: 50 clients, each sending its next request when the last answered (the maximum
  throughput);
- open loop: requests started on a fixed schedule at `--rate` per second whatever the answers do, and
  latency counted from the scheduled start, so a stalled server shows as latency, not as fewer
  requests (no coordinated omission);
- the same open loop while 10 more clients send dry runs back to back: dry runs tokenize the files,
  the API's heaviest read, and must not starve the listing.

The GETs are sent by a lean keep-alive HTTP/1.1 client (benchmarks/keep_alive_gets.py, about
0.2 ms of CPU per request against httpx's 3 to 5), the dry runs by httpx. The load generator's own
CPU (its user + system seconds over the wall seconds, in cores) is printed beside each phase: on a
2-core machine it competes with the server for the same cores. So is what each request cost in
CPU: the server processes', PostgreSQL's (the backends serving the benchmark's database: those
alive at the phase's end, so a connection opened and closed within the phase is missed) and the
generator's, in milliseconds per request. On a machine shared with other work those are what stays
comparable between runs, and they bound what the cores could serve: `capacity` is
cores x 1000 / (their sum), the requests per second if the machine did nothing else.
"""

import argparse
import asyncio
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from benchmarks.keep_alive_gets import KeepAliveGets

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
JOBS = 40
CLOSED_LOOP_CLIENTS = 50
DRY_RUN_CLIENTS = 10


@dataclass
class Phase:
    name: str
    requests: int
    seconds: float
    latencies: list[float]  # seconds, of the GETs
    errors: int
    generator_cores: float
    server_cpu: float  # seconds, all server processes
    database_cpu: float  # seconds, the PostgreSQL backends of the benchmark's database
    dry_runs: int = 0

    def cpu_ms_per_request(self, cpu_seconds: float) -> float:
        return 1e3 * cpu_seconds / max(1, len(self.latencies) + self.dry_runs)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", default=f"1,{os.cpu_count() or 1}", help="server processes to compare")
    parser.add_argument("--seconds", type=float, default=8.0, help="each phase's length")
    parser.add_argument("--rate", type=float, default=200.0, help="the open loop's requests per second")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="a PostgreSQL URL that may create databases")
    options = parser.parse_args()
    counts = [int(count) for count in dict.fromkeys(options.processes.split(","))]
    with (
        tempfile.TemporaryDirectory(prefix="deltatune-api-load-") as scratch,
        own_database(options.admin_url) as database_url,
    ):
        results = {}
        for processes in counts:
            data_dir = Path(scratch) / "data"  # one file store: the dry runs read the seeded file
            with api_server(database_url, data_dir, processes) as (base_url, key, server_pid):
                if processes == counts[0]:
                    seed_jobs(base_url, key)
                meter = CpuMeter(server_pid, options.admin_url, database_url.rsplit("/", 1)[1])
                results[processes] = asyncio.run(
                    run_phases(base_url, key, options.seconds, options.rate, meter)
                )
    print_results(results, options.rate)


@contextmanager
def own_database(admin_url: str) -> Iterator[str]:
    name = f"deltatune_api_load_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def api_server(database_url: str, data_dir: Path, processes: int) -> Iterator[tuple[str, str, int]]:
    """`deltatune api --processes N` on a free port, and an API key for the benchmark's owner."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DELTATUNE_")}
    env |= {
        "DELTATUNE_DATABASE_URL": database_url,
        "DELTATUNE_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run([sys.executable, "-m", "service.cli", "migrate"], env=env, check=True, capture_output=True)
    key = create_key(env)
    port = free_port()
    log_path = data_dir.parent / f"api-{processes}.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "api", "--port", str(port), "--processes", str(processes)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_ready(base_url, server, log_path)
            yield base_url, key, server.pid
        finally:
            server.terminate()
            server.wait(timeout=60)


def create_key(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--owner", "load"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return next(word for word in done.stdout.split() if word.startswith("dt-"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(base_url: str, server: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"deltatune api exited with {server.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"deltatune api was not ready within {timeout:.0f} s:\n{log_path.read_text()}")


def seed_jobs(base_url: str, key: str) -> None:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for _ in range(JOBS):
            answer = client.post("/v1/jobs", json=job_request(client))
            if answer.status_code != 201:
                raise SystemExit(f"POST /v1/jobs answered {answer.status_code}: {answer.text}")


def job_request(client: httpx.Client, *, dry_run: bool = False) -> dict[str, Any]:
    if not hasattr(job_request, "file_id"):
        with (ROOT / "examples" / "train.jsonl").open("rb") as data:
            files = {"file": ("train.jsonl", data)}
            answer = client.post("/v1/files", data={"purpose": "fine-tune"}, files=files)
        answer.raise_for_status()
        job_request.file_id = answer.json()["id"]  # type: ignore[attr-defined]
    spec: dict[str, Any] = json.loads((ROOT / "examples" / "jobs" / "lora.json").read_text())
    spec.update(training_file=job_request.file_id, validation_file=None)  # type: ignore[attr-defined]
    return spec | {"dry_run": True} if dry_run else spec


class CpuMeter:
    """CPU seconds used so far by the server (its process and every descendant) and by the PostgreSQL
    backends connected to the benchmark's database, read from /proc (Linux).

    A backend's CPU counts from the reading that first saw it and stays counted after it closes (the
    pool closes connections under the dry runs' bursts): summing only the backends alive at each
    reading made a phase's database CPU negative. What a backend used after the last reading that saw
    it, or in a life between two readings, is not counted: the figure errs low, never below zero."""

    def __init__(self, server_pid: int, admin_url: str, database: str) -> None:
        self.server_pid = server_pid
        self.admin_url = admin_url
        self.database = database
        self._backend_seconds: dict[int, float] = {}

    def read(self) -> tuple[float, float]:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            backends = [
                pid
                for (pid,) in admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,)
                )
            ]
        for pid in backends:
            self._backend_seconds[pid] = _cpu_of([pid]) or self._backend_seconds.get(pid, 0.0)
        return _cpu_of(_descendants(self.server_pid)), sum(self._backend_seconds.values())


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(stat[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state, ppid, ...), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_of(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        if (stat := _stat(pid)) is not None:
            ticks += int(stat[11]) + int(stat[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


async def run_phases(base_url: str, key: str, seconds: float, rate: float, meter: CpuMeter) -> list[Phase]:
    headers = {"Authorization": f"Bearer {key}"}
    host, port = base_url.removeprefix("http://").split(":")
    # The GETs go through a lean client of their own (benchmarks/keep_alive_gets.py), the dry runs
    # through httpx: few, and each costs the server far more than httpx costs the generator.
    gets = KeepAliveGets(host, int(port), headers, connections=CLOSED_LOOP_CLIENTS)
    limits = httpx.Limits(max_connections=DRY_RUN_CLIENTS, max_keepalive_connections=DRY_RUN_CLIENTS)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30) as client:
        await get_jobs(gets, time.perf_counter(), [])  # caches warm before anything is counted
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as sync_client:
            dry_run_body = job_request(sync_client, dry_run=True)
        try:
            return [
                await measured("closed loop, 50 clients", meter, lambda: closed_loop(gets, seconds)),
                await measured(f"open loop, {rate:.0f}/s", meter, lambda: open_loop(gets, seconds, rate)),
                await measured(
                    f"open loop, {rate:.0f}/s + 10 dry-run clients",
                    meter,
                    lambda: with_dry_runs(client, gets, seconds, rate, dry_run_body),
                ),
            ]
        finally:
            await gets.close()


async def measured(
    name: str, meter: CpuMeter, load: Callable[[], Awaitable[tuple[list[float], int, int]]]
) -> Phase:
    (server_before, database_before), cpu_before = meter.read(), _cpu_seconds()
    wall_before = time.perf_counter()
    latencies, errors, dry_runs = await load()
    wall = time.perf_counter() - wall_before
    cores = (_cpu_seconds() - cpu_before) / wall
    server_after, database_after = meter.read()
    return Phase(
        name,
        len(latencies) + errors,
        wall,
        latencies,
        errors,
        cores,
        server_after - server_before,
        database_after - database_before,
        dry_runs,
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def get_jobs(gets: KeepAliveGets, started: float, latencies: list[float]) -> bool:
    try:
        status = await asyncio.wait_for(gets.get("/v1/jobs"), timeout=30)
    except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError):
        return False
    latencies.append(time.perf_counter() - started)
    return status == 200


async def closed_loop(gets: KeepAliveGets, seconds: float) -> tuple[list[float], int, int]:
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def one_client() -> None:
        nonlocal errors
        while time.perf_counter() < end:
            if not await get_jobs(gets, time.perf_counter(), latencies):
                errors += 1

    await asyncio.gather(*(one_client() for _ in range(CLOSED_LOOP_CLIENTS)))
    return latencies, errors, 0


async def open_loop(gets: KeepAliveGets, seconds: float, rate: float) -> tuple[list[float], int, int]:
    latencies: list[float] = []
    outcomes = []
    start = time.perf_counter()
    for index in range(int(seconds * rate)):
        scheduled = start + index / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        outcomes.append(asyncio.create_task(get_jobs(gets, scheduled, latencies)))
    done = await asyncio.gather(*outcomes)
    return latencies, done.count(False), 0


async def with_dry_runs(
    client: httpx.AsyncClient, gets: KeepAliveGets, seconds: float, rate: float, body: dict[str, Any]
) -> tuple[list[float], int, int]:
    stop = asyncio.Event()
    dry_runs = 0

    async def dry_run_client() -> None:
        nonlocal dry_runs
        while not stop.is_set():
            answer = await client.post("/v1/jobs", json=body)
            dry_runs += answer.status_code == 200

    runners = [asyncio.create_task(dry_run_client()) for _ in range(DRY_RUN_CLIENTS)]
    try:
        latencies, errors, _ = await open_loop(gets, seconds, rate)
    finally:
        stop.set()
        await asyncio.gather(*runners, return_exceptions=True)
    return latencies, errors, dry_runs


def print_results(results: dict[int, list[Phase]], rate: float) -> None:
    cores = os.cpu_count() or 1
    print(
        f"{'processes':>9}  {'phase':<40} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'gen cores':>9}   CPU ms/request: {'server':>6} {'db':>5} {'gen':>5}  {'capacity':>8}"
    )
    for processes, phases in results.items():
        for phase in phases:
            extra = f"  ({phase.dry_runs / phase.seconds:.1f} dry runs/s)" if phase.dry_runs else ""
            server = phase.cpu_ms_per_request(phase.server_cpu)
            database = phase.cpu_ms_per_request(phase.database_cpu)
            generator = phase.cpu_ms_per_request(phase.generator_cores * phase.seconds)
            capacity = cores * 1e3 / (server + database + generator)
            print(
                f"{processes:>9}  {phase.name:<40} {len(phase.latencies) / phase.seconds:>7.0f} "
                f"{phase.percentile(0.5) * 1e3:>7.1f} {phase.percentile(0.99) * 1e3:>7.1f} "
                f"{phase.errors:>6} {phase.generator_cores:>9.2f}   {'':>15} {server:>6.2f} {database:>5.2f} "
                f"{generator:>5.2f}  {capacity:>6.0f}/s{extra}"
            )
    first, *others = results
    for processes in others:
        before = len(results[first][0].latencies) / results[first][0].seconds
        after = len(results[processes][0].latencies) / results[processes][0].seconds
        print(f"closed-loop throughput, {processes} processes against {first}: {after / before:.2f}x")
    print(f"goal: >= 400 GET /v1/jobs per second closed loop, p99 <= 100 ms at {rate:.0f}/s offered")
    print(f"capacity: {cores} cores x 1000 / (server + db + generator CPU ms per request), this machine idle")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (the machine's other work slows every figure)")


if __name__ == "__main__":
    main()
