"""The resume store on both engines: the latest complete point is the one found, a point whose upload
was cut short (no manifest) is passed over and replaced, older points go once a newer one is kept."""

import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from core.storage import Storage, open_storage
from tests.s3_server import S3Bucket, write_files
from tests.worker.jobs import add_job, claim
from tuning.resume import FORMAT_VERSION, MANIFEST, POINT_KIND, ResumePoint
from worker.resume_store import ResumeStore


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, settings: Settings) -> Storage:
    if request.param == "local":
        return open_storage(settings)
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    return open_storage(settings.model_copy(update=bucket.settings_fields()))


def written_point(scratch: Path, step: int) -> ResumePoint:
    """A point as tuning.run hands it over: a complete folder, its manifest written last."""
    folder = write_files(scratch / f"step-{step:08d}", {"state.json": json.dumps({"step": step}).encode()})
    manifest = {"kind": POINT_KIND, "format_version": FORMAT_VERSION, "step": step}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return ResumePoint.read(folder)


def test_the_latest_complete_point_is_kept_and_found(
    sessions: sessionmaker[Session], settings: Settings, storage: Storage, tmp_path: Path
) -> None:
    job_id = add_job(sessions, settings)
    store = ResumeStore(storage, job_id)
    keep = store.keeper(claim(sessions, job_id))
    # An upload of step 8 cut short by a kill: its files but not its manifest.
    storage.publish_folder(
        write_files(tmp_path / "cut", {"state.json": b"{}"}), f"resume/{job_id}/step-00000008", move=True
    )

    keep(written_point(tmp_path / "run", 4))
    found = store.latest(tmp_path / "fetched")
    assert found is not None and found.step == 4

    point = written_point(tmp_path / "run", 8)
    keep(point)
    assert not point.folder.exists()  # moved into the store
    found = store.latest(tmp_path / "fetched-again")
    assert found is not None and found.step == 8
    assert json.loads((found.folder / "state.json").read_text()) == {"step": 8}
    assert [name for _, name in store.stored()] == ["step-00000008"]

    store.remove()
    assert store.stored() == [] and store.latest(tmp_path / "none") is None
