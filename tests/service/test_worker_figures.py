"""The dry run's worker figures: an operator's DELTATUNE_WORKER_* settings, else what the queue's
workers seen recently published (the slowest one's), else the settings' defaults; the answer says which."""

import math
from dataclasses import fields, replace
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from core.models import WorkerFigures, utcnow
from core.settings import Settings
from core.worker_figures import FIGURES, publish_figures
from service.app import create_app
from service.worker_figures import SETTING_OF, settings_worker
from tests.service.helpers import job_body, jsonl, upload
from tuning.estimate import Worker

TWO_LABELS = [{"text": "good movie", "label": "pos"}, {"text": "bad film", "label": "neg"}]
# Two machines far apart from the defaults and from each other: the slow one is the CPU box.
FAST = Worker(
    device="cpu",
    float32_flops=4e11,
    layer_seconds=1e-4,
    optimizer_parameters_per_second=1e9,
    exchange_bytes_per_second=math.inf,  # a one-GPU machine's: kept as it is
    baseline_bytes=300_000_000,
)
SLOW = replace(FAST, float32_flops=2e9, layer_seconds=5e-3, baseline_bytes=600_000_000)


def publish(app: FastAPI, hostname: str, worker: Worker, *, queues: tuple[str, ...] = ("cpu",)) -> None:
    with app.state.sessionmaker() as session:
        publish_figures(session, hostname=hostname, queues=list(queues), worker=worker, measured_at=utcnow())


def dry_run(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    response = upload(client, auth, jsonl(TWO_LABELS))
    assert response.status_code == 201, response.text
    answer = client.post("/v1/jobs", headers=auth, json=job_body(response.json()["id"], dry_run=True))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def memory_baseline(answer: dict[str, Any]) -> int:
    return int(answer["estimated_peak_memory_parts"]["baseline"])


def test_every_measured_figure_has_a_setting() -> None:
    measured = {field.name for field in fields(Worker)} - {"device", "memory_bytes"}
    assert set(FIGURES) == measured == set(SETTING_OF)


def test_without_published_figures_the_dry_run_uses_the_defaults(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    answer = dry_run(client, auth)
    assert answer["worker_figures_source"] == "defaults"
    assert memory_baseline(answer) == settings.worker_baseline_bytes
    assert "the settings' defaults" in answer["estimate_method"]


def test_the_slowest_recently_seen_worker_of_the_queue_gives_the_figures(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    defaults = dry_run(client, auth)
    publish(app, "fast@a", FAST)
    assert memory_baseline(dry_run(client, auth)) == FAST.baseline_bytes
    publish(app, "slow@b", SLOW, queues=("gpu", "cpu"))
    publish(app, "slower@c", replace(SLOW, float32_flops=1e8), queues=("gpu",))  # another queue's
    answer = dry_run(client, auth)
    assert answer["worker_figures_source"] == "published"
    assert memory_baseline(answer) == SLOW.baseline_bytes
    assert "worker slow@b" in answer["estimate_method"]
    assert answer["estimated_seconds"] > defaults["estimated_seconds"]  # slower than the defaults


def test_a_worker_not_seen_recently_is_ignored(
    app: FastAPI, client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    publish(app, "fast@a", FAST)
    publish(app, "gone@b", SLOW)
    with app.state.sessionmaker() as session:
        long_ago = utcnow() - timedelta(seconds=settings.worker_seen_seconds + 1)
        session.execute(
            update(WorkerFigures).where(WorkerFigures.hostname == "gone@b").values(seen_at=long_ago)
        )
        session.commit()
    answer = dry_run(client, auth)
    assert "worker fast@a" in answer["estimate_method"]
    assert memory_baseline(answer) == FAST.baseline_bytes


@pytest.mark.parametrize("every_figure", [True, False])
def test_figures_an_operator_set_overrule_the_published_ones(
    settings: Settings, client: TestClient, auth: dict[str, str], every_figure: bool
) -> None:
    given: dict[str, Any] = (
        {name: getattr(settings, name) for name in SETTING_OF.values()} if every_figure else {}
    )
    given["worker_baseline_bytes"] = 123_456_789
    explicit = Settings(**settings.model_dump(include={"data_dir", "model_dirs"}), **given)
    app = create_app(explicit)  # on the same database as `auth`'s app
    publish(app, "fast@a", FAST)
    with TestClient(app) as own:
        answer = dry_run(own, auth)
    assert answer["worker_figures_source"] == "settings"
    assert memory_baseline(answer) == 123_456_789
    assert "DELTATUNE_WORKER_BASELINE_BYTES" in answer["estimate_method"]
    assert ("worker fast@a" in answer["estimate_method"]) is not every_figure


def test_the_stored_estimate_uses_the_published_figures(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    publish(app, "slow@b", SLOW)
    dry = dry_run(client, auth)
    response = upload(client, auth, jsonl(TWO_LABELS))
    created = client.post("/v1/jobs", headers=auth, json=job_body(response.json()["id"]))
    assert created.status_code == 201, created.text
    stored = created.json()["validation"]["estimate"]
    assert stored["seconds"] == pytest.approx(dry["estimated_seconds"])


def test_settings_worker_is_the_settings_figures(settings: Settings) -> None:
    worker = settings_worker(settings)
    assert worker.float32_flops == settings.worker_flops
    assert worker.baseline_bytes == settings.worker_baseline_bytes
    assert worker.device == "cpu"
