"""Servers a fault test owns: started on a free port in a temp folder, stopped and started again at will.

The shared local PostgreSQL and Redis must never be stopped, so a test that needs a server to go down
starts its own. `start_postgres()` runs `initdb` and `pg_ctl` from the installed PostgreSQL as the
`postgres` user (the tests run as root, which PostgreSQL refuses to run as); `stop()` ends only that
server, by the pid in its own `postmaster.pid`. `start_redis()` runs `redis-server` without
persistence (no RDB snapshot, no append-only file), so a restart loses every message, as a Redis
without persistence that restarts does; `stop()` ends only that server, by the pid it was started as.

    with start_postgres() as postgres:
        engine = create_engine(postgres.url)
        postgres.stop()    # connections fail now
        postgres.start()   # same port, same data: back

    with start_redis() as redis:
        redis.stop()       # the broker is gone, and with it every queued message
        redis.start()      # same port, empty
"""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis

POSTGRES_USER = "postgres"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick; free until someone binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log_tail(log_file: Path) -> str:
    """The end of a server's log, for a failing test's report."""
    try:
        return log_file.read_text(errors="replace")[-4000:]
    except OSError:
        return "(no log)"


def postgres_bin(tool: str) -> Path:
    """`tool` of the newest PostgreSQL installed under /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=lambda path: int(Path(path).parts[-3]))
    if not found:
        pytest.fail(
            f"no PostgreSQL {tool} under /usr/lib/postgresql/*/bin: install postgresql", pytrace=False
        )
    return Path(found[-1])


@dataclass
class PostgresServer:
    """A PostgreSQL of the test's own: `url` reaches its `postgres` database, trust auth."""

    root: Path  # owned by the postgres user: data/, the socket and the log
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def start(self) -> None:
        """Start it (again), and return once it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        _as_postgres(
            postgres_bin("pg_ctl"), "start", "-D", self.data_dir, "-l", self.log_file, "-o", options,
            "-w", "-t", str(int(START_TIMEOUT_SECONDS)),
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as connection:
                    connection.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{self.log()}") from None
                time.sleep(0.1)

    def pid(self) -> int | None:
        """The postmaster's pid while it runs (the first line of its postmaster.pid)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self, *, immediate: bool = False) -> None:
        """Stop this server only, by its pid: SIGINT is a fast shutdown (clients are disconnected),
        SIGQUIT an immediate one, like a crash. Returns once the process is gone."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGQUIT if immediate else signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        # An immediate stop leaves the pid file; the next start must not mistake it for a live server.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def is_up(self) -> bool:
        return self.pid() is not None and _alive(self.pid() or 0)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return log_tail(self.log_file)


@contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster on a free port, running; stopped and removed on exit."""
    try:
        account = pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        pytest.fail("no 'postgres' user: install postgresql to run the fault tests", pytrace=False)
    # Not under pytest's tmp_path: that folder is root's, mode 0700, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="deltatune-pg-"))
    os.chown(root, account.pw_uid, account.pw_gid)
    server = PostgresServer(root, free_port())
    try:
        _as_postgres(
            postgres_bin("initdb"), "-D", server.data_dir, "-U", POSTGRES_USER, "-A", "trust",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        server.start()
        yield server
    finally:
        server.close()


def _as_postgres(*command: object) -> None:
    argv = ["runuser", "-u", POSTGRES_USER, "--", *(str(part) for part in command)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd="/")
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; it is gone for our purpose once it is not running.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class RedisServer:
    """A Redis of the test's own, without persistence: `url` reaches its database 0."""

    root: Path  # its working folder and log
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.root / "redis.log"

    def start(self) -> None:
        """Start it (again, empty), and return once it answers PING."""
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("no redis-server on PATH: install redis to run the fault tests", pytrace=False)
        self.process = subprocess.Popen(
            [
                server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.root), "--logfile", str(self.log_file), "--daemonize", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"Redis did not start:\n{self.log()}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def pid(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def stop(self, *, immediate: bool = False) -> None:
        """Stop this server only, by its pid: SIGTERM is a clean shutdown (it saves nothing, having no
        persistence), SIGKILL a crash. Returns once the process is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if immediate else signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def is_up(self) -> bool:
        return self.pid() is not None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return log_tail(self.log_file)


@contextmanager
def start_redis() -> Iterator[RedisServer]:
    """A fresh Redis without persistence on a free port, running; stopped and removed on exit."""
    server = RedisServer(Path(tempfile.mkdtemp(prefix="deltatune-redis-")), free_port())
    try:
        server.start()
        yield server
    finally:
        server.close()
