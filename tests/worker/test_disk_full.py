"""A worker's disk filling up while a job trains or publishes: the job fails with `disk_full`, a
message naming no server path, and leaves no scratch, staging or half-written folder behind.

The data folder is a tiny tmpfs (the tests run as root); the database lives outside it, as a server's
would, so only the job's files hit the full disk.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine
from core.schema_version import upgrade_to_head
from core.settings import Settings
from tests.small_disk import fill, small_disk
from tests.worker.jobs import add_job, job_row
from worker.job_runner import run_job

DISK_BYTES = 2 * 1024 * 1024


@pytest.fixture()
def full_disk_settings(tmp_path: Path, tiny_bert_dir: Path) -> Iterator[Settings]:
    with small_disk(tmp_path / "small-disk", DISK_BYTES) as mount_point:
        yield Settings(
            data_dir=mount_point / "data",
            database_url=f"sqlite:///{tmp_path / 'deltatune.db'}",
            broker_url="filesystem://",
            model_dirs=[tiny_bert_dir.parent],
            heartbeat_seconds=0.05,
        )


@pytest.mark.parametrize("when", ["resume point", "artifact"])
def test_a_full_disk_fails_the_job_as_disk_full_and_leaves_nothing_behind(
    full_disk_settings: Settings, when: str
) -> None:
    settings = full_disk_settings
    if when == "resume point":
        settings = settings.model_copy(update={"resume_every_steps": 2})
    else:
        settings = settings.model_copy(update={"resume_every_steps": None, "resume_every_seconds": None})
    settings.data_dir.mkdir()
    upgrade_to_head(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
    try:
        job_id = add_job(sessions, settings, epochs=1)
        filler = fill(settings.data_dir)

        assert run_job(job_id, settings=settings, sessions=sessions, worker="w") == "failed"

        job = job_row(sessions, job_id)
        assert (job.status, job.error_code) == ("failed", "disk_full"), job.error_message
        assert "/" not in (job.error_message or "") and str(settings.data_dir) not in (
            job.error_message or ""
        )
        left = sorted(
            path.relative_to(settings.data_dir).as_posix()
            for path in settings.data_dir.rglob("*")
            if path != filler and not path.is_relative_to(settings.files_dir)
        )
        assert left in ([], ["work"], ["artifacts", "work"], ["resume", "work"]), left
        for folder in ("work", "artifacts", "resume"):
            assert not (settings.data_dir / folder).exists() or not any(
                (settings.data_dir / folder).iterdir()
            )
    finally:
        engine.dispose()
