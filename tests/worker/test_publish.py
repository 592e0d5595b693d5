"""Publishing is complete or absent: the folder and its rows appear together, or neither does."""

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from core.models import Artifact
from core.settings import Settings
from tests.worker.jobs import add_job, job_row
from tuning.run import RunResult
from worker import publish
from worker.lifecycle import JOBS
from worker.publish import publish_artifact

RESULT = RunResult(
    metrics={"val_accuracy": 0.75},
    examples_seen=64,
    trained_tokens=640,
    steps=8,
    files=["adapter_config.json", "adapter_model.safetensors"],
)


def built_artifact(folder: Path) -> dict[str, bytes]:
    contents = {"adapter_config.json": b'{"r": 4}', "adapter_model.safetensors": b"\x00\x01" * 1000}
    folder.mkdir(parents=True)
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return contents


def artifact_rows(sessions: sessionmaker[Session], job_id: str) -> list[Artifact]:
    with sessions() as session:
        return list(
            session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name))
        )


@pytest.fixture()
def running_job(sessions: sessionmaker[Session], settings: Settings) -> str:
    job_id = add_job(sessions, settings)
    assert JOBS.claim(sessions, job_id, worker="test")
    return job_id


def test_publish_moves_the_folder_and_records_it(
    sessions: sessionmaker[Session], settings: Settings, running_job: str, tmp_path: Path
) -> None:
    contents = built_artifact(tmp_path / "scratch" / "out")

    publish_artifact(
        sessions,
        running_job,
        out_dir=tmp_path / "scratch" / "out",
        artifacts_dir=settings.artifacts_dir,
        result=RESULT,
    )

    published = settings.artifacts_dir / running_job
    assert not (tmp_path / "scratch" / "out").exists()
    assert {path.name: path.read_bytes() for path in published.iterdir()} == contents
    rows = artifact_rows(sessions, running_job)
    assert [(row.name, row.bytes, row.sha256) for row in rows] == [
        (name, len(data), hashlib.sha256(data).hexdigest()) for name, data in sorted(contents.items())
    ]
    job = job_row(sessions, running_job)
    assert (job.status, job.progress, job.examples_seen, job.trained_tokens) == ("succeeded", 1.0, 64, 640)
    assert job.metrics == {"val_accuracy": 0.75}
    assert job.finished_at is not None


def test_a_failure_before_the_rename_publishes_nothing(
    sessions: sessionmaker[Session],
    settings: Settings,
    running_job: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built_artifact(tmp_path / "out")

    def rename_fails(source: Path, target: Path) -> None:
        raise OSError("simulated: the disk went away before the rename")

    monkeypatch.setattr(publish.os, "rename", rename_fails)
    with pytest.raises(OSError, match="simulated"):
        publish_artifact(
            sessions,
            running_job,
            out_dir=tmp_path / "out",
            artifacts_dir=settings.artifacts_dir,
            result=RESULT,
        )

    assert not (settings.artifacts_dir / running_job).exists()
    assert artifact_rows(sessions, running_job) == []
    assert job_row(sessions, running_job).status == "running"


def test_a_failed_transaction_takes_the_folder_back_out(
    sessions: sessionmaker[Session], settings: Settings, running_job: str, tmp_path: Path
) -> None:
    built_artifact(tmp_path / "out")
    # A real database failure at the insert of the second row, half-way through the transaction.
    with sessions.begin() as session:
        session.execute(
            text(
                "CREATE TRIGGER refuse_artifact BEFORE INSERT ON artifacts "
                "WHEN NEW.name LIKE '%.safetensors' "
                "BEGIN SELECT RAISE(ABORT, 'simulated: database refused the artifact'); END"
            )
        )

    with pytest.raises(Exception, match="simulated"):
        publish_artifact(
            sessions,
            running_job,
            out_dir=tmp_path / "out",
            artifacts_dir=settings.artifacts_dir,
            result=RESULT,
        )

    assert not (settings.artifacts_dir / running_job).exists()
    assert artifact_rows(sessions, running_job) == []
    assert job_row(sessions, running_job).status == "running"


def test_a_leftover_of_a_crashed_attempt_is_replaced(
    sessions: sessionmaker[Session], settings: Settings, running_job: str, tmp_path: Path
) -> None:
    leftover = settings.artifacts_dir / running_job
    leftover.mkdir(parents=True)
    (leftover / "half-written.bin").write_bytes(b"partial")
    contents = built_artifact(tmp_path / "out")

    publish_artifact(
        sessions, running_job, out_dir=tmp_path / "out", artifacts_dir=settings.artifacts_dir, result=RESULT
    )

    assert sorted(path.name for path in leftover.iterdir()) == sorted(contents)
    assert [path.name for path in settings.artifacts_dir.iterdir()] == [running_job]


def test_a_job_that_stopped_running_is_not_published(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    job_id = add_job(sessions, settings)  # queued, never claimed
    built_artifact(tmp_path / "out")

    with pytest.raises(RuntimeError, match="no longer running"):
        publish_artifact(
            sessions, job_id, out_dir=tmp_path / "out", artifacts_dir=settings.artifacts_dir, result=RESULT
        )

    assert not (settings.artifacts_dir / job_id).exists()
    assert artifact_rows(sessions, job_id) == []
