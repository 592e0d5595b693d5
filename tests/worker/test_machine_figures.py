"""A worker measures its machine's figures when it starts (once per machine: a restart reads them
back), publishes them for its queues and marks them seen every sweep; the dry run then uses them."""

import json
import math
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine
from core.models import WorkerFigures
from core.schema_version import upgrade_to_head
from core.settings import Settings
from core.worker_figures import publish_figures
from service.app import create_app
from service.auth import create_api_key
from tests.integration.api_client import upload
from tests.integration.services import flushed_redis, fresh_database
from tests.worker.jobs import sentiment_lines
from tests.worker.processes import WorkerProcess, clean_environment, wait_for
from tuning.estimate import Worker
from worker import machine_figures
from worker.machine_figures import FiguresPublication, MeasuredFigures, publication_at_start
from worker.machine_figures import machine_figures as figures_in

MEASURED = Worker(
    float32_flops=5e10, layer_seconds=1e-3, exchange_bytes_per_second=math.inf, baseline_bytes=1
)
HOSTNAME = "figures@localhost"
# Measuring takes ~12 s of both cores on an idle 2-core machine, several times that under load.
MEASURING_START_SECONDS = 300


@pytest.fixture
def measurements(monkeypatch: pytest.MonkeyPatch) -> list[Worker]:
    """Each measurement this test makes, stood in for by MEASURED."""
    made: list[Worker] = []

    def measure() -> Worker:
        made.append(MEASURED)
        return MEASURED

    monkeypatch.setattr(machine_figures, "measure_in_fresh_process", measure)
    return made


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'figures.db'}"
    upgrade_to_head(url)
    return sessionmaker(make_engine(url), expire_on_commit=False)


def rows(sessions: sessionmaker[Session]) -> list[WorkerFigures]:
    with sessions() as session:
        return list(session.scalars(select(WorkerFigures)))


def test_a_machine_is_measured_once_then_read_back(tmp_path: Path, measurements: list[Worker]) -> None:
    first = figures_in(tmp_path)
    again = figures_in(tmp_path)
    assert measurements == [MEASURED]
    assert again == first and again.worker.exchange_bytes_per_second == math.inf


def test_another_machine_measures_anew(
    tmp_path: Path, measurements: list[Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    figures_in(tmp_path)
    fingerprint = machine_figures.machine_fingerprint() | {"cpus": "999"}
    monkeypatch.setattr(machine_figures, "machine_fingerprint", lambda: fingerprint)
    figures_in(tmp_path)
    assert len(measurements) == 2
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_a_damaged_or_outdated_cache_is_measured_anew(tmp_path: Path, measurements: list[Worker]) -> None:
    figures_in(tmp_path)
    [kept] = tmp_path.glob("*.json")
    stored = json.loads(kept.read_text())
    del stored["figures"]["dropout_seconds"]  # as if Worker had gained that figure since
    kept.write_text(json.dumps(stored))
    figures_in(tmp_path)
    kept.write_text("{not json")
    figures_in(tmp_path)
    assert len(measurements) == 3


def test_the_fingerprint_names_the_machine_without_torch() -> None:
    fingerprint = machine_figures.machine_fingerprint()
    assert set(fingerprint) == {"cpu", "cpus", "torch", "gpus"}
    assert int(fingerprint["cpus"]) >= 1 and fingerprint["cpu"] and fingerprint["torch"]


def test_measuring_off_publishes_nothing(tmp_path: Path, measurements: list[Worker]) -> None:
    settings = Settings(data_dir=tmp_path, measure_worker=False)
    assert publication_at_start(settings, hostname=HOSTNAME, queues=["cpu"]) is None
    assert measurements == []


def test_a_publication_is_written_at_start_then_marked_seen(sessions: sessionmaker[Session]) -> None:
    measured_at = datetime.fromisoformat("2026-12-01T10:00:00+00:00")
    publication = FiguresPublication(
        MeasuredFigures(MEASURED, measured_at), hostname=HOSTNAME, queues=["gpu"]
    )
    with sessions() as session:  # what an earlier worker of the same name left
        earlier = replace(MEASURED, float32_flops=1.0)
        publish_figures(session, hostname=HOSTNAME, queues=["cpu"], worker=earlier, measured_at=measured_at)
    publication.refresh(sessions)
    [row] = rows(sessions)
    assert (row.queues, row.float32_flops, row.exchange_bytes_per_second) == ("gpu", 5e10, math.inf)
    first_seen = row.seen_at
    publication.refresh(sessions)
    [row] = rows(sessions)
    assert row.seen_at >= first_seen
    with sessions() as session:
        session.execute(delete(WorkerFigures))
        session.commit()
    publication.refresh(sessions)  # gone: written again
    assert [row.hostname for row in rows(sessions)] == [HOSTNAME]


@pytest.mark.integration
def test_a_worker_publishes_its_measured_figures_and_a_restart_reads_them_back(
    postgres_server: str, redis_server: str, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    models = tiny_bert_dir.parent
    with fresh_database() as database_url, flushed_redis() as broker_url:
        env = {
            "DATABASE_URL": database_url,
            "DELTATUNE_BROKER_URL": broker_url,
            "DELTATUNE_DATA_DIR": str(data_dir),
            "DELTATUNE_MODEL_DIRS": json.dumps([str(models)]),
            "DELTATUNE_AUTO_MIGRATE": "false",
            "DELTATUNE_SWEEP_SECONDS": "0.5",
            "DELTATUNE_MEASURE_WORKER": "true",
        }
        settings = Settings(
            database_url=database_url, broker_url=broker_url, data_dir=data_dir, model_dirs=[models]
        )
        upgrade_to_head(settings.database_url)
        worker = WorkerProcess(clean_environment(**env), tmp_path / "worker.log", hostname=HOSTNAME)
        engine = make_engine(settings.database_url)
        sessions = sessionmaker(engine, expire_on_commit=False)
        try:
            worker.start().wait_ready(timeout=MEASURING_START_SECONDS)
            [row] = rows(sessions)
            assert (row.hostname, row.queues) == (HOSTNAME, "cpu,gpu")
            figures = [row.float32_flops, row.layer_seconds, row.optimizer_parameters_per_second]
            assert all(math.isfinite(value) and value > 0 for value in figures), figures
            assert row.baseline_bytes > 0 and row.bf16_flops >= 0
            assert len(list(settings.machine_figures_dir.glob("*.json"))) == 1
            wait_for(
                lambda: rows(sessions)[0].seen_at > row.seen_at, timeout=30, what="a sweep", log=worker.log
            )
            assert_dry_run_uses(settings, sessions)

            worker.stop()
            worker.start().wait_ready(timeout=90)  # no measuring this time
            [again] = rows(sessions)
            assert again.measured_at == row.measured_at and again.float32_flops == row.float32_flops
            assert again.seen_at > row.seen_at
            assert worker.log().count("measuring this machine's figures") == 1
            assert worker.log().count("read from") == 1
        finally:
            worker.stop()
            engine.dispose()


def assert_dry_run_uses(settings: Settings, sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        key = create_api_key(session, owner_name="figures")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
        training = upload(client, sentiment_lines(8, seed=1), filename="train.jsonl")
        body = {
            "base_model": "tiny-bert",
            "training_file": training,
            "method": {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
            "dry_run": True,
        }
        answer = client.post("/v1/jobs", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["worker_figures_source"] == "published"
    assert f"worker {HOSTNAME}" in answer.json()["estimate_method"]
