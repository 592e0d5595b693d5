"""The transferability task on a worker: claim once, score every candidate, store the ranking or the error."""

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.dispatch import make_celery
from core.models import File, JobStatus, TransferabilityRun
from core.settings import Settings
from tests.service.helpers import broker_messages
from tests.worker.jobs import add_file, claim, expire_lease, sentiment_lines
from worker.lifecycle import RUNS
from worker.sweep import sweep
from worker.transferability import score_run


def add_run(
    sessions: sessionmaker[Session], training_file: str, base_models: list[str], **request: Any
) -> str:
    """A queued run of the file's owner, as POST /v1/transferability leaves it."""
    stored = {"training_file": training_file, "base_models": base_models, "task": "sequence_classification"}
    stored |= {"max_examples": 1000} | request
    with sessions.begin() as session:
        owner_id = session.scalar(select(File.owner_id).where(File.id == training_file))
        run = TransferabilityRun(owner_id=owner_id, status="queued", request=stored, queue="cpu")
        session.add(run)
        session.flush()
        return run.id


def run_row(sessions: sessionmaker[Session], run_id: str) -> TransferabilityRun:
    with sessions() as session:
        run = session.get(TransferabilityRun, run_id)
        assert run is not None
        return run


@pytest.fixture
def models(settings: Settings, tiny_gpt2_dir: Path) -> list[str]:
    """tiny-bert and tiny-gpt2, both in the worker's model directory."""
    assert tiny_gpt2_dir.parent in settings.model_dirs
    return ["tiny-bert", "tiny-gpt2"]


def test_a_run_scores_every_candidate_stores_them_ranked_and_runs_once(
    settings: Settings, sessions: sessionmaker[Session], models: list[str]
) -> None:
    training = add_file(sessions, settings, sentiment_lines(40, seed=1), purpose="fine-tune")
    run_id = add_run(sessions, training, models)

    assert score_run(run_id, settings=settings, sessions=sessions, worker="w1") == JobStatus.SUCCEEDED
    run = run_row(sessions, run_id)
    assert run.status == "succeeded" and run.worker == "w1" and run.error_code is None
    assert run.started_at is not None and run.finished_at is not None and run.finished_at >= run.started_at
    assert sorted(r["model"] for r in run.results) == models
    values = [r["value"] for r in run.results]
    assert values == sorted(values, reverse=True), "LogME: best (highest) first"
    assert [r["rank"] for r in run.results] == [1, 2]
    for result in run.results:
        assert result["score"] == "logme" and result["examples"] == 40 and result["feature_dim"] == 32
    json.dumps(run.results)  # stored as JSON, readable by the API

    # A second delivery of the same message finds the run claimed and changes nothing.
    assert score_run(run_id, settings=settings, sessions=sessions, worker="w2") is None
    assert run_row(sessions, run_id).worker == "w1" and run_row(sessions, run_id).results == run.results


def test_causal_lm_runs_report_perplexity_and_say_which_model_has_no_lm_head(
    settings: Settings, sessions: sessionmaker[Session], models: list[str]
) -> None:
    training = add_file(sessions, settings, sentiment_lines(30, seed=2), purpose="fine-tune")
    run_id = add_run(sessions, training, models, task="causal_lm", max_examples=10)
    assert score_run(run_id, settings=settings, sessions=sessions, worker="w1") == JobStatus.SUCCEEDED
    gpt2, bert = run_row(sessions, run_id).results
    assert gpt2["model"] == "tiny-gpt2" and gpt2["rank"] == 1 and gpt2["examples"] == 10
    assert gpt2["score"] == "perplexity" and gpt2["value"] > 1.0 and gpt2["tokens"] > 10
    assert bert["model"] == "tiny-bert" and bert["value"] is None and bert["rank"] is None
    assert "no trained causal language-model head" in bert["error"]


@pytest.mark.parametrize(
    ("lines", "code", "message"),
    [
        (None, "file_not_found", "missing from the file store"),
        (sentiment_lines(6, seed=3, labels=("positive",)), "invalid_data", "at least 2 distinct labels"),
    ],
    ids=["file-gone", "one-label"],
)
def test_a_run_that_cannot_score_fails_with_its_reason(
    settings: Settings, sessions: sessionmaker[Session], lines: list[str] | None, code: str, message: str
) -> None:
    training = add_file(sessions, settings, lines or sentiment_lines(4, seed=4), purpose="fine-tune")
    if lines is None:
        (settings.files_dir / training).unlink()
    run_id = add_run(sessions, training, ["tiny-bert"])
    assert score_run(run_id, settings=settings, sessions=sessions, worker="w1") == JobStatus.FAILED
    run = run_row(sessions, run_id)
    assert run.status == "failed" and run.error_code == code and run.finished_at is not None
    assert message in (run.error_message or "") and run.results == []


def test_a_model_removed_after_the_request_fails_the_run(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    training = add_file(sessions, settings, sentiment_lines(8, seed=5), purpose="fine-tune")
    run_id = add_run(sessions, training, ["tiny-bert", "gone-model"])
    assert score_run(run_id, settings=settings, sessions=sessions, worker="w1") == JobStatus.FAILED
    run = run_row(sessions, run_id)
    assert run.error_code == "model_not_found" and "gone-model" in (run.error_message or "")


def test_the_sweep_queues_runs_with_expired_leases_again_and_resends_queued_ones(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    training = add_file(sessions, settings, sentiment_lines(8, seed=6), purpose="fine-tune")
    waiting, orphan, alive = (add_run(sessions, training, ["tiny-bert"]) for _ in range(3))
    claim(sessions, orphan, worker="w1", lifecycle=RUNS)
    claim(sessions, alive, worker="w1", lifecycle=RUNS)  # the same name, but its lease is fresh
    expire_lease(sessions, orphan, lifecycle=RUNS)

    report = sweep(settings, make_celery(settings), at_start=True)

    assert report.requeued == [orphan]
    assert sorted(report.resent) == sorted([waiting, orphan])
    assert run_row(sessions, orphan).status == "queued"
    assert run_row(sessions, alive).status == "running", "a run under a fresh lease is left alone"
    sent = broker_messages(settings)
    assert sorted(m["args"][0] for m in sent) == sorted([waiting, orphan, orphan])
    assert {m["task"] for m in sent} == {"deltatune.score_transferability"}


def test_the_worker_registers_the_task_from_the_app_module() -> None:
    from worker.app import celery_app as app  # what `celery -A worker.app worker` loads

    app.loader.import_default_modules()
    assert "deltatune.score_transferability" in app.tasks
