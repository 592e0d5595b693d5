"""The distributed setup by hand: PostgreSQL, Redis, a real Celery worker process and the API.

One stack per module: a fresh database, a flushed Redis index, a worker subprocess started exactly as
compose starts one (env only), and the API in-process through create_app + TestClient.
"""

import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine
from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from service.auth import create_api_key
from tests.integration.services import flushed_redis, fresh_database
from tests.worker.processes import WorkerProcess, clean_environment

WORKER_NAME = "integration@localhost"


@dataclass
class Stack:
    settings: Settings
    client: TestClient
    sessions: sessionmaker[Session]
    worker: WorkerProcess
    models_root: Path


# Module scope: it owns the Redis index while it lives, and other modules start workers of their own
# over the same index (tests/integration/test_worker_loss.py).
@pytest.fixture(scope="module")
def stack(
    postgres_server: str, redis_server: str, tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("integration-data")
    models_root = tiny_bert_dir.parent
    with fresh_database() as database_url, flushed_redis() as broker_url:
        env = {
            "DATABASE_URL": database_url,
            "DELTATUNE_BROKER_URL": broker_url,
            "DELTATUNE_DATA_DIR": str(data_dir),
            "DELTATUNE_MODEL_DIRS": json.dumps([str(models_root)]),
            "DELTATUNE_HEARTBEAT_SECONDS": "0.2",
            "DELTATUNE_AUTO_MIGRATE": "false",
            "DELTATUNE_WORKER_MAX_PROCESSES_PER_JOB": "2",
        }
        settings = Settings(
            database_url=database_url,
            broker_url=broker_url,
            data_dir=data_dir,
            model_dirs=[models_root],
            auto_migrate=False,
            worker_max_processes_per_job=2,
        )
        upgrade_to_head(settings.database_url)  # the compose file's one-shot migration
        worker = WorkerProcess(clean_environment(**env), data_dir.parent / "worker.log", hostname=WORKER_NAME)
        engine = make_engine(settings.database_url)
        sessions = sessionmaker(engine, expire_on_commit=False)
        try:
            worker.start().wait_ready()
            with sessions() as session:
                key = create_api_key(session, owner_name="integration")
            with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
                yield Stack(settings, client, sessions, worker, models_root)
        finally:
            worker.stop()
            engine.dispose()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Show the worker's log with any failing integration test."""
    report: pytest.TestReport = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(stack, Stack):
        report.sections.append(("worker log", stack.worker.log()[-8000:]))
    return report
