"""Publishing is complete or absent: the folder and its rows appear together, or neither does; each
attempt publishes into its own folder, and a stale attempt publishes nothing and deletes nothing."""

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.models import Artifact
from core.settings import Settings
from core.storage import local as local_storage
from core.storage import open_storage
from core.storage.keys import artifact_prefix
from tests.s3_server import S3Bucket
from tests.worker.jobs import add_job, claim, expire_lease, job_row
from tuning.run import RunResult
from worker.lifecycle import Attempt, LostLease
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
def attempt(sessions: sessionmaker[Session], settings: Settings) -> Attempt:
    return claim(sessions, add_job(sessions, settings), worker="test")


def test_publish_moves_the_folder_and_records_it(
    sessions: sessionmaker[Session], settings: Settings, attempt: Attempt, tmp_path: Path
) -> None:
    contents = built_artifact(tmp_path / "scratch" / "out")

    publish_artifact(
        attempt,
        out_dir=tmp_path / "scratch" / "out",
        storage=open_storage(settings),
        result=RESULT,
    )

    published = settings.data_dir / artifact_prefix(attempt.row_id, attempt.number)
    assert not (tmp_path / "scratch" / "out").exists()
    assert {path.name: path.read_bytes() for path in published.iterdir()} == contents
    rows = artifact_rows(sessions, attempt.row_id)
    assert [(row.name, row.bytes, row.sha256) for row in rows] == [
        (name, len(data), hashlib.sha256(data).hexdigest()) for name, data in sorted(contents.items())
    ]
    job = job_row(sessions, attempt.row_id)
    assert (job.status, job.progress, job.examples_seen, job.trained_tokens) == ("succeeded", 1.0, 64, 640)
    assert job.metrics == {"val_accuracy": 0.75}
    assert job.finished_at is not None


def test_a_failure_before_the_rename_publishes_nothing(
    sessions: sessionmaker[Session],
    settings: Settings,
    attempt: Attempt,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built_artifact(tmp_path / "out")

    def rename_fails(source: Path, target: Path) -> None:
        raise OSError("simulated: the disk went away before the rename")

    monkeypatch.setattr(local_storage.os, "rename", rename_fails)
    with pytest.raises(OSError, match="simulated"):
        publish_artifact(
            attempt,
            out_dir=tmp_path / "out",
            storage=open_storage(settings),
            result=RESULT,
        )

    assert not (settings.data_dir / artifact_prefix(attempt.row_id, attempt.number)).exists()
    assert artifact_rows(sessions, attempt.row_id) == []
    assert job_row(sessions, attempt.row_id).status == "running"


def test_a_failed_transaction_takes_the_folder_back_out(
    sessions: sessionmaker[Session], settings: Settings, attempt: Attempt, tmp_path: Path
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
            attempt,
            out_dir=tmp_path / "out",
            storage=open_storage(settings),
            result=RESULT,
        )

    assert not (settings.data_dir / artifact_prefix(attempt.row_id, attempt.number)).exists()
    assert artifact_rows(sessions, attempt.row_id) == []
    assert job_row(sessions, attempt.row_id).status == "running"


def test_a_stale_attempt_publishes_nothing_and_leaves_the_current_ones_folder(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    job_id = add_job(sessions, settings)
    stale = claim(sessions, job_id, worker="frozen")
    expire_lease(sessions, job_id)
    current = claim(sessions, job_id, worker="alive")
    contents = built_artifact(tmp_path / "current")
    publish_artifact(current, out_dir=tmp_path / "current", storage=open_storage(settings), result=RESULT)
    built_artifact(tmp_path / "stale")

    with pytest.raises(LostLease):
        publish_artifact(stale, out_dir=tmp_path / "stale", storage=open_storage(settings), result=RESULT)

    published = settings.data_dir / artifact_prefix(job_id, current.number)
    assert {path.name: path.read_bytes() for path in published.iterdir()} == contents
    assert [path.name for path in (settings.artifacts_dir / job_id).iterdir()] == ["attempt-2"]
    assert len(artifact_rows(sessions, job_id)) == len(contents)
    assert (job_row(sessions, job_id).status, job_row(sessions, job_id).attempt) == ("succeeded", 2)


def test_a_commit_lost_in_flight_is_settled_by_reading_the_row_back(
    sessions: sessionmaker[Session],
    settings: Settings,
    attempt: Attempt,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contents = built_artifact(tmp_path / "out")
    real_commit = Connection._commit_impl
    lost = []

    def commit_then_lose_the_connection(self: Connection) -> None:
        real_commit(self)
        if not lost:  # the first commit is the publish's: the client never hears it went through
            lost.append(True)
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"), True)

    monkeypatch.setattr(Connection, "_commit_impl", commit_then_lose_the_connection)
    publish_artifact(attempt, out_dir=tmp_path / "out", storage=open_storage(settings), result=RESULT)

    published = settings.data_dir / artifact_prefix(attempt.row_id, attempt.number)
    assert lost and {path.name: path.read_bytes() for path in published.iterdir()} == contents
    assert job_row(sessions, attempt.row_id).status == "succeeded"
    assert len(artifact_rows(sessions, attempt.row_id)) == len(contents)


def test_a_job_that_stopped_running_is_not_published(
    sessions: sessionmaker[Session], settings: Settings, attempt: Attempt, tmp_path: Path
) -> None:
    attempt.cancel()
    built_artifact(tmp_path / "out")

    with pytest.raises(LostLease):
        publish_artifact(attempt, out_dir=tmp_path / "out", storage=open_storage(settings), result=RESULT)

    assert not (settings.artifacts_dir / attempt.row_id).exists() or not any(
        (settings.artifacts_dir / attempt.row_id).iterdir()
    )
    assert artifact_rows(sessions, attempt.row_id) == []


def test_on_s3_a_publish_whose_rows_are_refused_leaves_no_object(
    sessions: sessionmaker[Session], settings: Settings, attempt: Attempt, tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    # A worker of another host: its artifact goes to the bucket, and back out when its rows are refused.
    storage = open_storage(settings.model_copy(update=s3_bucket.settings_fields()))
    built_artifact(tmp_path / "out")
    expire_lease(sessions, attempt.row_id)
    claim(sessions, attempt.row_id, worker="other")  # the job is another attempt's now

    with pytest.raises(LostLease):
        publish_artifact(attempt, out_dir=tmp_path / "out", storage=storage, result=RESULT)

    assert s3_bucket.object_keys() == []
    assert artifact_rows(sessions, attempt.row_id) == []


def test_on_s3_a_published_artifact_is_every_file_under_the_attempts_key(
    sessions: sessionmaker[Session], settings: Settings, attempt: Attempt, tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    storage = open_storage(settings.model_copy(update=s3_bucket.settings_fields()))
    contents = built_artifact(tmp_path / "out")
    publish_artifact(attempt, out_dir=tmp_path / "out", storage=storage, result=RESULT)
    prefix = f"deltatune/{artifact_prefix(attempt.row_id, attempt.number)}"
    assert s3_bucket.object_keys() == sorted(f"{prefix}/{name}" for name in contents)
    rows = artifact_rows(sessions, attempt.row_id)
    assert {row.name: row.sha256 for row in rows} == {
        name: hashlib.sha256(data).hexdigest() for name, data in contents.items()
    }
    assert not (tmp_path / "out").exists()  # moved: the scratch copy is gone
