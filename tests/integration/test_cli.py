"""The `deltatune` command against the local PostgreSQL (and Redis): schema checks, migrate, keys."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server import free_port
from tests.integration.services import flushed_redis, fresh_database
from tests.worker.processes import ROOT, clean_environment, wait_for


def deltatune(*args: str, database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_environment(DATABASE_URL=database_url, **env),
        check=False,
    )


@pytest.fixture()
def empty_database(postgres_server: str) -> Iterator[str]:
    with fresh_database("deltatune_cli") as url:
        yield url


@pytest.mark.integration
@pytest.mark.parametrize("command", [["api"], ["worker", "--queues", "gpu"]])
def test_distributed_processes_refuse_a_schema_behind_head(empty_database: str, command: list[str]) -> None:
    result = deltatune(*command, database_url=empty_database, DELTATUNE_AUTO_MIGRATE="false")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "schema is behind" in result.stderr and "deltatune migrate" in result.stderr


def test_an_unreachable_database_is_named() -> None:
    result = deltatune(
        "worker", database_url="postgresql://nobody@127.0.0.1:1/none", DELTATUNE_AUTO_MIGRATE="false"
    )

    assert result.returncode == 2
    assert "cannot reach the database at postgresql+psycopg://nobody@127.0.0.1:1/none" in result.stderr


@pytest.mark.integration
def test_migrate_then_keys_create_and_list(empty_database: str) -> None:
    migrated = deltatune("migrate", database_url=empty_database)
    assert migrated.returncode == 0, migrated.stderr
    assert "at head" in migrated.stdout

    created = deltatune("keys", "create", "--owner", "alice", database_url=empty_database)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("dt-") and len(key) > 20

    listed = deltatune("keys", "list", database_url=empty_database)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [(row[1], row[2]) for row in rows] == [("alice", key[:11])]
    assert key not in listed.stdout  # the secret is shown once, at creation

    revoked = deltatune("keys", "revoke", rows[0][0], database_url=empty_database)
    assert revoked.returncode == 0, revoked.stderr
    assert deltatune("keys", "revoke", rows[0][0], database_url=empty_database).returncode == 2


def start(*args: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            cwd=ROOT,
            env=clean_environment(**env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.integration
def test_the_compose_commands_start_on_a_migrated_database(
    empty_database: str, redis_server: str, tmp_path: Path
) -> None:
    """`deltatune api` and `deltatune worker --queues gpu`, as compose runs them after `migrate`."""
    with flushed_redis() as broker_url:
        env = {
            "DATABASE_URL": empty_database,
            "DELTATUNE_BROKER_URL": broker_url,
            "DELTATUNE_DATA_DIR": str(tmp_path / "data"),
            "DELTATUNE_AUTO_MIGRATE": "false",
        }
        assert deltatune("migrate", database_url=empty_database).returncode == 0
        port = free_port()
        api = start("api", "--port", str(port), log=tmp_path / "api.log", **env)
        worker = start(
            "worker", "--queues", "gpu", "--hostname", "cli@localhost", log=tmp_path / "worker.log", **env
        )
        try:
            read = lambda name: (tmp_path / name).read_text(errors="replace")  # noqa: E731
            wait_for(
                lambda: "cli@localhost ready." in read("worker.log"),
                timeout=90,
                what="deltatune worker",
                log=lambda: read("worker.log"),
            )
            assert ".> gpu" in read("worker.log") and ".> cpu" not in read("worker.log")

            def ready() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(ready, timeout=90, what="deltatune api to be ready", log=lambda: read("api.log"))
        finally:
            exit_codes = (stop(api), stop(worker))  # both stopped before either is judged
        assert exit_codes == (0, 0)


@pytest.mark.integration
def test_api_processes_share_the_port_and_stop_together(empty_database: str, tmp_path: Path) -> None:
    """`deltatune api --processes 2`: two server processes answer on one port; SIGTERM stops both."""
    import psutil

    env = {
        "DATABASE_URL": empty_database,
        "DELTATUNE_DATA_DIR": str(tmp_path / "data"),
        "DELTATUNE_AUTO_MIGRATE": "false",
    }
    assert deltatune("migrate", database_url=empty_database).returncode == 0
    port = free_port()
    api = start("api", "--port", str(port), "--processes", "2", log=tmp_path / "api.log", **env)
    read = lambda: (tmp_path / "api.log").read_text(errors="replace")  # noqa: E731
    try:
        # uvicorn's supervisor logs each server process it started once that one is serving.
        wait_for(
            lambda: read().count("Application startup complete") == 2, timeout=90, what="2 servers", log=read
        )
        # The children are the servers, spawned by multiprocessing, and its resource tracker.
        children = psutil.Process(api.pid).children()
        servers = [child for child in children if "spawn_main" in " ".join(child.cmdline())]
        assert len(servers) == 2, [child.cmdline() for child in children]
        for _ in range(10):
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    finally:
        exit_code = stop(api)
    assert exit_code == 0, read()
    # The resource tracker leaves once the parent's pipe closes: a moment after the parent.
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [child.cmdline() for child in alive]


def test_api_refuses_a_negative_process_count(tmp_path: Path) -> None:
    database = tmp_path / "unused.db"
    result = deltatune("api", "--processes", "-1", database_url=f"sqlite:///{database}")

    assert result.returncode == 2
    assert "--processes must be 0 (one per CPU core) or more" in result.stderr
    assert not database.exists(), "a refused command created its database"
