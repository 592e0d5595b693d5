"""A data folder on a full disk: an upload answers 507 and stores nothing, /readyz says not ready.

The disk is a tiny tmpfs mounted for the test (the tests run as root); it is unmounted afterwards.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from service.auth import create_api_key
from tests.service.helpers import files_on_disk, jsonl, upload
from tests.small_disk import small_disk as mount_small_disk

DISK_BYTES = 4 * 1024 * 1024


@pytest.fixture(name="small_disk")
def small_disk_fixture(tmp_path: Path) -> Iterator[Path]:
    with mount_small_disk(tmp_path / "small-disk", DISK_BYTES) as mount_point:
        yield mount_point


def test_upload_on_a_full_disk_is_507_stores_nothing_and_readyz_says_not_ready(small_disk: Path) -> None:
    settings = Settings(data_dir=small_disk / "data", max_upload_bytes=16 * 1024 * 1024)
    settings.data_dir.mkdir()
    upgrade_to_head(settings.database_url)
    app = create_app(settings)
    with app.state.sessionmaker() as session:
        headers = {"Authorization": f"Bearer {create_api_key(session, owner_name='alice')}"}
    line = {"text": "x" * 1000, "label": "a"}
    bigger_than_the_disk = jsonl([line] * (DISK_BYTES // 1000 + 100))
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200

        response = upload(client, headers, bigger_than_the_disk)
        assert response.status_code == 507, response.text
        error = response.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "insufficient_storage",
            "insufficient_storage",
            "file",
        )
        assert str(small_disk) not in error["message"] and "/" not in error["message"]
        assert files_on_disk(settings.files_dir) == []
        assert files_on_disk(settings.data_dir / "uploads") == []  # no temp file left behind
        assert client.get("/v1/files", headers=headers).json()["data"] == []

        # Fill what is left: now not even a small write fits.
        filler = settings.data_dir / "filler"
        with filler.open("wb") as out, pytest.raises(OSError):
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["error"]["param"] == "storage"
        assert "No space left on device" in ready.json()["error"]["message"]
        filler.unlink()
        assert client.get("/readyz").status_code == 200
