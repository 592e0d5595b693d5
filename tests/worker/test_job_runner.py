"""run_job records every outcome, with a real `tuning.run` on the tiny BERT and a migrated SQLite."""

import json
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.models import Artifact, Job, JobEvent
from core.settings import Settings
from core.storage import local as local_storage
from core.storage.keys import artifact_prefix
from tests.worker.jobs import add_job, data_path, job_row, sentiment_lines
from worker.job_runner import run_job


def events_of(sessions: sessionmaker[Session], job_id: str, kind: str | None = None) -> list[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    if kind is not None:
        query = query.where(JobEvent.type == kind)
    with sessions() as session:
        return list(session.scalars(query))


def artifact_rows(sessions: sessionmaker[Session], job_id: str) -> list[Artifact]:
    with sessions() as session:
        return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id)))


def published_folder(sessions: sessionmaker[Session], settings: Settings, job_id: str) -> Path:
    return settings.data_dir / artifact_prefix(job_id, job_row(sessions, job_id).attempt)


def assert_nothing_published(sessions: sessionmaker[Session], settings: Settings, job_id: str) -> None:
    folder = settings.artifacts_dir / job_id
    assert not folder.exists() or list(folder.iterdir()) == []
    assert artifact_rows(sessions, job_id) == []


def assert_scratch_removed(settings: Settings) -> None:
    assert list(settings.work_dir.iterdir()) == []
    assert not settings.resume_dir.exists() or list(settings.resume_dir.iterdir()) == []


def final_status_event(sessions: sessionmaker[Session], job_id: str) -> JobEvent:
    return events_of(sessions, job_id, "status")[-1]


def test_a_job_succeeds_and_publishes_its_adapter(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings, epochs=2)

    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "succeeded"

    job = job_row(sessions, job_id)
    assert (job.status, job.worker, job.progress) == ("succeeded", "w1", 1.0)
    assert job.examples_seen == 64 and job.trained_tokens > job.examples_seen
    assert 0.0 <= job.metrics["val_accuracy"] <= 1.0 and "train_loss" in job.metrics
    published = published_folder(sessions, settings, job_id)
    assert published == settings.artifacts_dir / job_id / "attempt-1"
    rows = {row.name: row for row in artifact_rows(sessions, job_id)}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(rows)
    assert set(rows) == {
        path.relative_to(published).as_posix() for path in published.rglob("*") if path.is_file()
    }
    assert all(rows[name].bytes == (published / name).stat().st_size for name in rows)
    assert json.loads((published / "adapter_config.json").read_text())["r"] == 4
    assert any("lora_A" in key for key in load_file(published / "adapter_model.safetensors"))
    kinds = [event.type for event in events_of(sessions, job_id)]
    assert kinds[0] == "status" and kinds[-1] == "status"
    assert "metrics" in kinds and "eval" in kinds
    assert [event.data["status"] for event in events_of(sessions, job_id, "status")] == [
        "running",
        "succeeded",
    ]
    assert_scratch_removed(settings)


def test_a_running_job_is_cancelled_and_publishes_nothing(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings, epochs=500, logging_steps=1)  # minutes of training if not stopped
    stop_watching = threading.Event()

    def cancel_once_training_shows_progress() -> None:
        while not stop_watching.wait(0.05):
            if events_of(sessions, job_id, "metrics"):
                with sessions.begin() as session:
                    session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
                return

    watcher = threading.Thread(target=cancel_once_training_shows_progress)
    watcher.start()
    try:
        assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "cancelled"
    finally:
        stop_watching.set()
        watcher.join()

    job = job_row(sessions, job_id)
    assert job.status == "cancelled" and job.finished_at is not None
    last_step = events_of(sessions, job_id, "metrics")[-1].data
    assert last_step["step"] < last_step["total_steps"] / 10  # stopped early, not trained to the end
    assert final_status_event(sessions, job_id).data["status"] == "cancelled"
    assert_nothing_published(sessions, settings, job_id)
    assert_scratch_removed(settings)


def test_bad_data_fails_the_job_with_its_reason(sessions: sessionmaker[Session], settings: Settings) -> None:
    # The validation file has a label the training file never shows: the model cannot predict it.
    validation = sentiment_lines(8, seed=3, labels=("positive", "negative", "neutral"))
    job_id = add_job(sessions, settings, validation=validation)

    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "failed"

    job = job_row(sessions, job_id)
    assert (job.status, job.error_code, job.error_param) == ("failed", "invalid_data", "validation_file")
    assert "neutral" in (job.error_message or "")
    event = final_status_event(sessions, job_id)
    assert (event.level, event.data["status"], event.data["code"]) == ("error", "failed", "invalid_data")
    assert_nothing_published(sessions, settings, job_id)
    assert_scratch_removed(settings)


def test_an_unknown_base_model_fails_naming_the_known_ones(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings, spec_changes={"base_model": "no-such-model"})

    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "failed"

    job = job_row(sessions, job_id)
    assert (job.error_code, job.error_param) == ("model_not_found", "base_model")
    assert "tiny-bert" in (job.error_message or "")


def test_a_stored_spec_that_no_longer_validates_fails(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings, spec_changes={"unexpected_field": 1})

    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "failed"

    job = job_row(sessions, job_id)
    assert job.error_code == "invalid_spec" and "unexpected_field" in (job.error_message or "")


def test_a_missing_file_blob_fails_naming_the_file(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings)
    training_id = job_row(sessions, job_id).training_file_id
    data_path(settings, training_id).unlink()

    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "failed"

    job = job_row(sessions, job_id)
    assert (job.error_code, job.error_param) == ("file_not_found", "training_file")
    assert training_id in (job.error_message or "")


def test_an_unexpected_error_fails_as_internal_error(
    sessions: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = add_job(sessions, settings)

    def rename_fails(source: Path, target: Path) -> None:
        raise OSError("simulated: rename refused")

    monkeypatch.setattr(local_storage.os, "rename", rename_fails)

    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "failed"

    job = job_row(sessions, job_id)
    assert job.error_code == "internal_error" and "simulated: rename refused" in (job.error_message or "")
    assert_nothing_published(sessions, settings, job_id)
    assert_scratch_removed(settings)


def test_a_job_not_claimed_is_left_alone(sessions: sessionmaker[Session], settings: Settings) -> None:
    job_id = add_job(sessions, settings)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="cancelled"))

    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") is None

    assert job_row(sessions, job_id).status == "cancelled"
    assert events_of(sessions, job_id) == []
    assert not settings.work_dir.exists() or list(settings.work_dir.iterdir()) == []


def test_an_attempt_that_loses_its_lease_stops_and_writes_nothing_more(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings, epochs=500, logging_steps=1)  # minutes of training if not stopped
    outcome: list[str | None] = []
    runner = threading.Thread(
        target=lambda: outcome.append(run_job(job_id, settings=settings, sessions=sessions, worker="frozen"))
    )
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not events_of(sessions, job_id, "metrics") and time.monotonic() < deadline:
            time.sleep(0.02)
        # What a claim does once the lease expired, had this attempt frozen past it (it keeps renewing
        # here, so the test moves the row on itself).
        with sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(attempt=2, worker="alive"))
        events_after_the_steal = len(events_of(sessions, job_id))
    finally:
        runner.join(timeout=60)
    assert not runner.is_alive() and outcome == [None]
    assert len(events_of(sessions, job_id)) == events_after_the_steal  # nothing written once lost
    job = job_row(sessions, job_id)
    assert (job.status, job.worker, job.attempt) == ("running", "alive", 2)
    assert_nothing_published(sessions, settings, job_id)
    assert list(settings.work_dir.iterdir()) == []
