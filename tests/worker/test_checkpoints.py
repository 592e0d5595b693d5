"""Checkpoints of a job the worker runs: their rows and folders, pruning, and a job that starts from one."""

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.models import Checkpoint as CheckpointRow
from core.settings import Settings
from core.storage import open_storage
from tests.worker.jobs import add_job, claim, job_row
from tuning.checkpoints import Checkpoint
from worker.checkpoints import CheckpointPublisher, checkpoint_folder
from worker.job_runner import run_job
from worker.lifecycle import JobFailure

# 32 training examples in batches of 8, 2 epochs: 8 steps; a checkpoint every 2, the newest 2 kept.
CHECKPOINTED = {"checkpoints": {"every_steps": 2, "keep": 2}}


def checkpoint_rows(sessions: sessionmaker[Session], job_id: str) -> list[CheckpointRow]:
    with sessions() as session:
        query = select(CheckpointRow).where(CheckpointRow.job_id == job_id).order_by(CheckpointRow.step)
        return list(session.scalars(query))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_job_keeps_rows_of_its_newest_checkpoints(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings, spec_changes=CHECKPOINTED, eval_steps=4)
    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "succeeded"

    rows = checkpoint_rows(sessions, job_id)
    assert [(row.step, row.epoch) for row in rows] == [(6, 1.5), (8, 2.0)]
    # Step 8 is the last evaluation: its metrics are the job's final ones.
    assert rows[1].metrics["val_loss"] == pytest.approx(job_row(sessions, job_id).metrics["val_loss"])
    assert rows[0].metrics == {}  # no evaluation ran at step 6
    names = {f["name"] for f in rows[1].files}
    assert {"deltatune.json", "adapter_model.safetensors"} <= names
    assert rows[1].bytes == sum(f["bytes"] for f in rows[1].files) > 0


def test_published_checkpoints_are_whole_and_old_ones_go(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    job_id = add_job(sessions, settings)
    publisher = CheckpointPublisher(claim(sessions, job_id), storage=open_storage(settings))
    written = []
    for step in (2, 4, 6):
        folder = tmp_path / f"step-{step}"
        (folder / "sub").mkdir(parents=True)
        (folder / "deltatune.json").write_text(f'{{"step": {step}}}')
        (folder / "sub" / "weights.bin").write_bytes(bytes([step]) * 100)
        written.append(Checkpoint(step, step / 4, {"val_loss": 1.0 / step}, folder, []))
    publisher(written[0], [])
    publisher(written[1], [])
    publisher(written[2], [2])

    rows = checkpoint_rows(sessions, job_id)
    assert [row.step for row in rows] == [4, 6]
    stored = settings.checkpoints_dir / job_id
    assert sorted(path.name for path in stored.iterdir()) == sorted(row.id for row in rows)  # no leftovers
    for row in rows:
        folder = checkpoint_folder(sessions, open_storage(settings), row.id, scratch=settings.work_dir)
        assert folder == stored / row.id
        assert {f["name"]: f["sha256"] for f in row.files} == {
            "deltatune.json": sha256(folder / "deltatune.json"),
            "sub/weights.bin": sha256(folder / "sub" / "weights.bin"),
        }
        assert row.bytes == 100 + len(f'{{"step": {row.step}}}')

    # A retried job writing step 6 again replaces the earlier row and folder.
    publisher(written[2], [])
    again = checkpoint_rows(sessions, job_id)
    assert [row.step for row in again] == [4, 6] and again[1].id != rows[1].id
    assert not (stored / rows[1].id).exists()


def test_a_checkpoint_that_is_gone_is_not_found(sessions: sessionmaker[Session], settings: Settings) -> None:
    with pytest.raises(JobFailure) as caught:
        checkpoint_folder(sessions, open_storage(settings), "ckpt-nothing", scratch=settings.work_dir)
    assert (caught.value.code, caught.value.param) == ("checkpoint_not_found", "from_checkpoint")


def test_a_job_from_a_pruned_checkpoint_fails_naming_it(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = add_job(sessions, settings, spec_changes={"from_checkpoint": "ckpt-pruned"})
    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "failed"
    job = job_row(sessions, job_id)
    assert (job.error_code, job.error_param) == ("checkpoint_not_found", "from_checkpoint")


def test_checkpoints_outlive_publishing_and_a_new_job_starts_from_one(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    first = add_job(sessions, settings, spec_changes=CHECKPOINTED, eval_steps=4)
    assert run_job(first, settings=settings, sessions=sessions, worker="w1") == "succeeded"
    last = checkpoint_rows(sessions, first)[-1]
    folder = checkpoint_folder(sessions, open_storage(settings), last.id, scratch=settings.work_dir)
    assert {f["name"]: f["sha256"] for f in last.files} == {
        name: sha256(folder / name) for name in (f["name"] for f in last.files)
    }

    resumed = add_job(sessions, settings, spec_changes={"from_checkpoint": last.id}, eval_steps=4)
    assert run_job(resumed, settings=settings, sessions=sessions, worker="w1") == "succeeded"
    # The first job's own data files are the same lines, so the start is the checkpoint's evaluation.
    metrics = job_row(sessions, resumed).metrics
    assert metrics["initial_val_loss"] == pytest.approx(last.metrics["val_loss"], abs=1e-4)
